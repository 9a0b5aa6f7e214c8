// coat-grads: the loss and every parameter's gradient of one batch, for parity checks against other
// implementations (scripts/hf_parity.py compares them with HF transformers' autograd).
//   coat-grads --checkpoint runs/tiny --tokens batch.bin --batch 4 --seq 64 --output grads.safetensors
//              [--device cpu|cuda] [--precision fp32|bf16] [--first-window 0]
// Row r of the batch is the trainer's window first-window + r of the token file (tokens [w*seq, w*seq+seq]:
// ids the first seq, targets the next seq); loss = mean next-token cross-entropy over all rows * seq targets,
// computed as the trainer's step computes it (same model, same recipe: bf16 = BF16 compute copy and
// activations, FP32 master weights and gradients). Writes every parameter's gradient as F32 under HF's
// parameter names (one tensor for tied embeddings), the loss in the metadata ("loss"), and prints the loss.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "coat/io/safetensors.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/train/gradients.h"
#include "coat/train/model_loader.h"

int main(int argc, char** argv) {
  CLI::App app{"coat-grads: loss and parameter gradients of one batch, as safetensors with HF names"};
  std::string checkpoint, tokens_path, output, device = "cpu", precision = "fp32";
  int64_t batch = 1, seq = 0, first_window = 0;
  app.add_option("--checkpoint", checkpoint,
                 "checkpoint or run directory (an import of an HF model works too)")
      ->required();
  app.add_option("--tokens", tokens_path, "token file (coat format); row r = window first-window + r")
      ->required();
  app.add_option("--batch", batch, "rows")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--seq", seq, "tokens per row (targets are the next tokens)")
      ->required()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--first-window", first_window, "window of row 0")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--output", output, "safetensors file to write")->required();
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision, "fp32 (CPU reference) or bf16 (the trainer's bf16 recipe)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  CLI11_PARSE(app, argc, argv);
  try {
    if (device == "cuda" && precision == "fp32") {
      throw coat::InvalidArgument(
          "--precision fp32 is the CPU reference; on CUDA use bf16 (cuDNN's fused attention runs in BF16)");
    }
    coat::ContextPtr ctx =
        coat::ops::make_context(device == "cuda" ? coat::Device::cuda(0) : coat::Device::cpu());
    const std::optional<coat::DType> compute =
        precision == "bf16" ? std::optional<coat::DType>(coat::DType::BF16) : std::nullopt;
    coat::train::LoadedModel loaded = coat::train::load_model(checkpoint, ctx, /*with_grads=*/true, compute);
    coat::models::Transformer& model = *loaded.model;
    if (seq > model.config().max_position_embeddings) {
      throw coat::InvalidArgument(coat::detail::concat("--seq ", seq,
                                                       " exceeds the model's max_position_embeddings ",
                                                       model.config().max_position_embeddings));
    }
    const coat::data::TokenFile tokens = coat::data::TokenFile::open(tokens_path);
    const coat::train::TokenBatch b =
        coat::train::read_windows(tokens, first_window, batch, seq, model.config().vocab_size, ctx);
    const coat::train::GradientResult r = coat::train::compute_gradients(model, b);
    std::vector<std::pair<std::string, coat::Tensor>> grads;
    for (const coat::nn::Parameter& p : model.parameters()) {
      grads.emplace_back(
          p.name, p.grad.dtype() == coat::DType::F32 ? p.grad : coat::ops::cast(p.grad, coat::DType::F32));
    }
    char loss_text[64];
    std::snprintf(loss_text, sizeof loss_text, "%.17g", r.loss);
    coat::io::write_safetensors(output, grads,
                                {{"format", "pt"},
                                 {"loss", loss_text},
                                 {"tokens", std::to_string(r.tokens)},
                                 {"device", device},
                                 {"precision", precision}});
    std::printf("loss %.9f over %lld targets (%s, %s); wrote %zu gradients to %s\n", r.loss,
                static_cast<long long>(r.tokens), device.c_str(), precision.c_str(), grads.size(),
                output.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-grads: error: %s\n", e.what());
    return 1;
  }
}
