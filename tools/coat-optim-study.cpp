// coat-optim-study: the quantization error of FP8 optimizer-state storages on the AdamW states of a real
// run (COAT paper, Table 1): MSE of m / (sqrt(v) + eps) for each first-moment format x second-moment format.
//   coat-optim-study --checkpoint runs/tiny [--group 128] [--eps 1e-8] [--json study.json]
// The checkpoint must hold FP32 states (optim.state_dtype = fp32): every "<name>.exp_avg" with its
// "<name>.exp_avg_sq".
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/optim/state_study.h"

int main(int argc, char** argv) {
  CLI::App app{"coat-optim-study: quantization error of FP8 AdamW states (COAT Table 1)"};
  std::string checkpoint, json_out;
  int64_t group = 128;
  double eps = -1.0;
  app.add_option("--checkpoint", checkpoint, "checkpoint directory or run directory (its latest checkpoint)")->required();
  app.add_option("--group", group, "elements per scale group")->check(CLI::Range(int64_t{1}, int64_t{65536}));
  app.add_option("--eps", eps, "eps of m / (sqrt(v) + eps); default: the run's optim.eps");
  app.add_option("--json", json_out, "also write the table as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  try {
    std::filesystem::path dir = checkpoint;
    if (!std::filesystem::exists(dir / "COMPLETE")) {
      auto latest = coat::io::latest_complete(dir);
      if (!latest) throw coat::IoError("no complete checkpoint in " + dir.string());
      dir = latest->dir;
    }
    // Any format and world size: the reader assembles each unit's whole state from the rank files.
    const coat::io::CheckpointReader ck = coat::io::CheckpointReader::open(dir);
    if (eps < 0.0) {
      eps = 1e-8;
      if (ck.meta().contains("config") && ck.meta()["config"].contains("optim")) {
        eps = ck.meta()["config"]["optim"].value("eps", eps);
      }
    }
    std::vector<std::pair<coat::Tensor, coat::Tensor>> moments;
    for (const coat::io::CheckpointTensorInfo& e : ck.tensors()) {
      const std::string suffix = ".exp_avg";
      if (e.name.size() <= suffix.size() || e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) != 0) {
        continue;
      }
      const std::string sq = e.name + "_sq";
      if (e.dtype != coat::DType::F32 || !ck.contains(sq) || ck.info(sq).dtype != coat::DType::F32) {
        throw coat::InvalidArgument("checkpoint " + dir.string() + ": '" + e.name +
                                    "' needs an F32 partner '" + sq + "'; run with optim.state_dtype = fp32");
      }
      moments.emplace_back(ck.read(e.name), ck.read(sq));
    }
    if (moments.empty()) throw coat::InvalidArgument("checkpoint " + dir.string() + " holds no '*.exp_avg' tensors");
    const coat::optim::StudyTable t = coat::optim::quantization_study(moments, coat::optim::table1_formats(group), eps);
    std::printf("checkpoint %s (step %lld): %lld state elements in %zu tensors, group %lld, eps %g\n",
                dir.string().c_str(), static_cast<long long>(ck.step()), static_cast<long long>(t.elements),
                moments.size(), static_cast<long long>(group), eps);
    std::printf("MSE of m/(sqrt(v)+eps), rows: first moment, columns: second moment (mean square of the update: %.6g)\n",
                t.mean_square_update);
    std::fputs(coat::optim::format_study(t).c_str(), stdout);
    std::printf("MSE of m alone:");
    for (size_t i = 0; i < t.labels.size(); ++i) std::printf("  %s %.4g", t.labels[i].c_str(), t.mse_m[i]);
    std::printf("\nMSE of v alone:");
    for (size_t i = 0; i < t.labels.size(); ++i) std::printf("  %s %.4g", t.labels[i].c_str(), t.mse_v[i]);
    std::printf("\n");
    if (!json_out.empty()) {
      nlohmann::json j = {{"checkpoint", dir.string()}, {"step", ck.step()}, {"group", group}, {"eps", eps},
                          {"elements", t.elements}, {"labels", t.labels}, {"mse", t.mse}, {"mse_m", t.mse_m},
                          {"mse_v", t.mse_v}, {"mean_square_update", t.mean_square_update}};
      coat::io::write_string_atomically(json_out, j.dump(2) + "\n");  // checked: IoError naming the file
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-optim-study: %s\n", e.what());
    return 1;
  }
  return 0;
}
