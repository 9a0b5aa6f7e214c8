// Choosing the checkpoint to resume (rank 0 decides, all verify, all agree) and checking it against the
// config.
#include "coat/train/resume.h"

#include <spdlog/spdlog.h>

#include <exception>
#include <functional>
#include <vector>

#include "coat/dist/host_collectives.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checksum.h"
#include "coat/models/unit_layout.h"
#include "coat/train/unit_state.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

/// The model keys whose values differ: "hidden_size: checkpoint 32, this config 48; ...".
std::string differing_keys(const nlohmann::json& checkpoint, const nlohmann::json& config) {
  std::string out;
  const auto add = [&](const std::string& key, const nlohmann::json* a, const nlohmann::json* b) {
    out += detail::concat(out.empty() ? "" : "; ", "model.", key, ": checkpoint ", a ? a->dump() : "(absent)",
                          ", this config ", b ? b->dump() : "(absent)");
  };
  for (const auto& [key, value] : checkpoint.items()) {
    if (!config.contains(key))
      add(key, &value, nullptr);
    else if (config.at(key) != value)
      add(key, &value, &config.at(key));
  }
  for (const auto& [key, value] : config.items()) {
    if (!checkpoint.contains(key)) add(key, nullptr, &value);
  }
  return out;
}

/// The optimizer config the checkpoint was saved under: a key it lacks is this config's (a moment's dtype:
/// the checkpoint's state_dtype).
OptimConfig saved_optim(const nlohmann::json& saved, const OptimConfig& now) {
  OptimConfig before = now;
  if (saved.contains("state_dtype"))
    before.state_dtype = parse_state_dtype(saved["state_dtype"].get<std::string>());
  const auto moment_dtype = [&saved](const char* key) -> std::optional<ops::MomentEncoding> {
    const std::string spelled = saved.value(key, std::string());
    if (spelled.empty()) return std::nullopt;  // early versions wrote "" for "as state_dtype"
    return parse_state_dtype(spelled);
  };
  before.exp_avg_dtype = moment_dtype("exp_avg_dtype");
  before.exp_avg_sq_dtype = moment_dtype("exp_avg_sq_dtype");
  if (saved.contains("exp_avg_fp8"))
    before.exp_avg_fp8 = parse_moment_fp8(saved["exp_avg_fp8"].get<std::string>());
  if (saved.contains("exp_avg_sq_fp8")) {
    before.exp_avg_sq_fp8 = parse_moment_fp8(saved["exp_avg_sq_fp8"].get<std::string>());
  }
  before.state_group_size = saved.value("state_group_size", before.state_group_size);
  return before;
}

/// The states must be stored as this run stores them (a change of the state storage cannot resume). The
/// storages that the two configs produce are compared, not their spellings.
void check_state_storage(const io::CheckpointReader& ck, const OptimConfig& now) {
  if (!ck.meta().contains("config") || !ck.meta()["config"].contains("optim")) return;
  const OptimConfig before = saved_optim(ck.meta()["config"]["optim"], now);
  const auto same = [](const ops::MomentSpec& a, const ops::MomentSpec& b) {
    if (a.encoding != b.encoding) return false;
    const bool grouped =
        a.encoding == ops::MomentEncoding::FP8 || a.encoding == ops::MomentEncoding::FP8Expand;
    return !grouped || (a.fp8 == b.fp8 && a.group_size == b.group_size);
  };
  struct Moment {
    const char* name;
    ops::MomentSpec was, now;
  };
  for (const Moment& m : {Moment{"exp_avg", exp_avg_spec(before), exp_avg_spec(now)},
                          Moment{"exp_avg_sq", exp_avg_sq_spec(before), exp_avg_sq_spec(now)}}) {
    if (same(m.was, m.now)) continue;
    throw ConfigError(
        detail::concat("checkpoint ", ck.dir().string(), " stores the AdamW moment ", m.name, " as ",
                       ops::moment_spec_str(m.was), " but this config stores it as ",
                       ops::moment_spec_str(m.now), " (optim.state_dtype / optim.", m.name,
                       "_dtype / _fp8 / optim.state_group_size); resume with the checkpoint's setting"));
  }
}

// ---- the loss mask ----

/// The data.loss_mask of the run that wrote a checkpoint ("" for none, and for checkpoints older than the key).
std::string saved_loss_mask(const io::CheckpointReader& ck) {
  const nlohmann::json& meta = ck.meta();
  if (!meta.contains("config") || !meta["config"].contains("data") || !meta["config"]["data"].contains("loss_mask")) {
    return "";
  }
  const nlohmann::json& saved = meta["config"]["data"]["loss_mask"];
  if (!saved.is_string()) {
    throw IoError(detail::concat("checkpoint '", ck.dir().string(), "': meta.json config.data.loss_mask is ",
                                 saved.dump(), ", expected a path"));
  }
  return saved.get<std::string>();
}

/// What to do instead of resuming under another loss mask.
std::string start_new_run_instead(const io::CheckpointReader& ck) {
  return detail::concat("resuming would change the loss mid-run. Start a new run from its weights with --set "
                        "train.init_from=",
                        ck.dir().parent_path().parent_path().string(), " instead");
}

/// A loss mask added or removed on resume changes the loss mid-run.
void check_loss_mask_presence(const io::CheckpointReader& ck, const std::string& now) {
  const std::string before = saved_loss_mask(ck);
  if (before.empty() == now.empty()) return;
  const std::string start_new = start_new_run_instead(ck);
  if (before.empty()) {
    throw ConfigError(detail::concat("checkpoint '", ck.dir().string(),
                                     "' was trained without a loss mask (every target counted) but this config sets "
                                     "'data.loss_mask' = '", now, "': remove data.loss_mask to resume; ", start_new));
  }
  throw ConfigError(detail::concat("checkpoint '", ck.dir().string(), "' was trained with 'data.loss_mask' = '", before,
                                   "' but this config sets none: set data.loss_mask to that mask to resume; ",
                                   start_new));
}

/// "'path' (N entries, K counted, CRC-32C h)" of a loss_mask_record.
std::string describe_loss_mask(const nlohmann::json& record) {
  return detail::concat("'", record.value("path", std::string("?")), "' (", record.value("entries", uint64_t{0}),
                        " entries, ", record.value("counted", uint64_t{0}), " counted, CRC-32C ",
                        record.value("crc32c", std::string("?")), ")");
}

// ---- agreement between ranks ----

enum Status : int64_t { kNone = 0, kCandidate = 1, kFailed = 2 };

struct Decision {
  int64_t status = kNone;
  std::string text;  ///< the candidate's path, or the failure's message
};

/// Rank 0's decision on every rank: `decide` runs on rank 0 alone; when it throws, rank 0 rethrows its own
/// exception and the others throw with its message.
Decision rank0_decides(dist::Communicator* world, const ContextPtr& context,
                       const std::function<Decision()>& decide) {
  Decision d;
  std::exception_ptr error;
  if (!world || world->rank() == 0) {
    try {
      d = decide();
    } catch (const std::exception& e) {
      d = {kFailed, e.what()};
      error = std::current_exception();
    }
  }
  d.status = dist::broadcast_values(world, context, {d.status}, 0)[0];
  d.text = dist::broadcast_text(world, context, d.text, 0);
  if (error) std::rethrow_exception(error);
  if (d.status == kFailed) throw Error("--resume refused on rank 0: " + d.text);
  return d;
}

/// A checkpoint verified by every rank's share.
struct Verification {
  io::CheckpointReader checkpoint;  ///< this rank's reader (unusable when damaged)
  std::string damage;               ///< the first failure's message, the same on every rank; "" when verified
};

/// Every byte of the checkpoint against COMPLETE, rank file f verified by rank f % world. When every file
/// passed, every rank knows it, and its reader takes all the files as verified: the load reads the tensors
/// without checksumming them again.
Verification verify_collectively(const fs::path& dir, dist::Communicator* world, const ContextPtr& context,
                                 int io_threads) {
  const int rank = world ? world->rank() : 0, ranks = world ? world->world_size() : 1;
  Verification v;
  try {
    v.checkpoint = io::CheckpointReader::open(dir, io_threads);  // meta.json against COMPLETE
    for (int f = rank; f < v.checkpoint.file_count(); f += ranks) v.checkpoint.verify_file(f);
  } catch (const Error& e) {
    v.damage = e.what();
  }
  const std::vector<int64_t> failed = dist::all_gather_values(world, context, {v.damage.empty() ? 0 : 1});
  for (int r = 0; r < ranks; ++r) {
    if (failed[static_cast<size_t>(r)] != 0) {
      v.damage = dist::broadcast_text(world, context, v.damage, r);
      return v;
    }
  }
  v.checkpoint.mark_all_files_verified();
  return v;
}

/// Rank 0's candidates, newest first: every complete checkpoint (auto), or the one named after checking that
/// it is no older than the run's newest.
std::vector<fs::path> candidates(const std::string& resume, const fs::path& run_dir) {
  std::vector<fs::path> out;
  if (resume == "auto") {
    for (const io::CheckpointInfo& c : io::list_checkpoints(run_dir)) {
      if (c.complete) out.insert(out.begin(), c.dir);
    }
    return out;
  }
  const fs::path dir = resume;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw IoError(detail::concat("--resume ", dir, ": no such checkpoint directory"));
  const int64_t step = io::read_manifest(dir).step;
  const std::optional<io::CheckpointInfo> newest = io::latest_complete(run_dir);
  if (newest && newest->step > step && fs::weakly_canonical(newest->dir) != fs::weakly_canonical(dir)) {
    throw ConfigError(
        detail::concat("--resume ", dir.string(), " is step ", step,
                       " but the run directory holds a newer complete checkpoint, ", newest->dir.string(),
                       " (step ", newest->step,
                       "): going on from the older one would train over the newer "
                       "ones' steps. Use --resume auto (the newest), or move the newer checkpoints out of ",
                       io::checkpoints_root(run_dir).string(), " first"));
  }
  out.push_back(dir);
  return out;
}

}  // namespace

void check_resumable(const io::CheckpointReader& ck, const TrainConfig& config) {
  const std::string dir = ck.dir().string();
  if (ck.meta().value("weights_only", false)) {
    throw ConfigError(detail::concat("checkpoint '", dir,
                                     "' holds weights only (an import): start a run from it with "
                                     "--set train.init_from=",
                                     ck.dir().parent_path().parent_path().string(), " instead of --resume"));
  }
  const nlohmann::json& meta = ck.meta();
  if (!meta.contains("config") || !meta["config"].contains("model")) {
    throw IoError(detail::concat("checkpoint '", dir, "': meta.json has no config.model"));
  }
  const nlohmann::json& saved_model = meta["config"]["model"];
  if (saved_model != config.resolved.at("model")) {
    throw ConfigError(detail::concat("checkpoint '", dir, "' was written for another model (",
                                     differing_keys(saved_model, config.resolved.at("model")), ")"));
  }
  check_state_storage(ck, config.optim);
  check_loss_mask_presence(ck, config.data.loss_mask);
  if (ck.layout()) {
    // The same model config in another build could lay its units out otherwise (the tensors per unit follow
    // from the state storage, checked above).
    io::CheckpointLayout run = *ck.layout();
    run.units.clear();
    for (const models::UnitLayout& unit : models::unit_layouts(config.model))
      run.units.push_back(checkpoint_unit(unit));
    if (const std::optional<std::string> difference = io::layout_difference(*ck.layout(), run)) {
      throw ConfigError(detail::concat("checkpoint '", dir, "' lays the model out otherwise: ", *difference));
    }
  }
}

nlohmann::json loss_mask_record(const data::LossMaskFile& mask) {
  return {{"path", mask.path().string()},
          {"entries", mask.size()},
          {"counted", mask.counted()},
          {"crc32c", io::crc32c_hex(mask.checksum())}};
}

void check_same_loss_mask(const io::CheckpointReader& ck, const data::LossMaskFile* mask) {
  check_loss_mask_presence(ck, mask ? mask->path().string() : std::string());
  if (!mask || !ck.meta().contains("loss_mask")) return;
  const nlohmann::json& before = ck.meta()["loss_mask"];
  if (!before.is_object() || !before.value("entries", nlohmann::json()).is_number_unsigned() ||
      !before.value("crc32c", nlohmann::json()).is_string() || !before.value("path", nlohmann::json()).is_string() ||
      !before.value("counted", nlohmann::json()).is_number_unsigned()) {
    throw IoError(detail::concat("checkpoint '", ck.dir().string(), "': meta.json loss_mask is ", before.dump(),
                                 ", expected {path, entries, counted, crc32c}"));
  }
  const nlohmann::json now = loss_mask_record(*mask);
  if (before.value("entries", uint64_t{0}) == mask->size() && before.value("crc32c", std::string()) == now["crc32c"]) {
    return;  // the same entries, wherever the file is now
  }
  throw ConfigError(detail::concat("checkpoint '", ck.dir().string(), "' was trained with the loss mask ",
                                   describe_loss_mask(before), " but 'data.loss_mask' is ", describe_loss_mask(now),
                                   ": resume with the checkpoint's mask; ", start_new_run_instead(ck)));
}

std::optional<io::CheckpointReader> open_resume_checkpoint(const std::string& resume,
                                                           const TrainConfig& config,
                                                           dist::Communicator* world,
                                                           const ContextPtr& context) {
  if (resume.empty()) return std::nullopt;
  const fs::path run_dir = config.logging.run_dir;
  std::vector<fs::path> queue;  // rank 0's
  size_t next = 0;
  rank0_decides(world, context, [&] {
    for (const fs::path& p : io::remove_checkpoint_leftovers(run_dir)) {
      spdlog::warn("removed {}: left by an interrupted run (a save, or pruning, cut short)", p.string());
    }
    queue = candidates(resume, run_dir);
    return Decision{};
  });
  for (;;) {
    const Decision d = rank0_decides(world, context, [&] {
      return next < queue.size() ? Decision{kCandidate, queue[next++].string()} : Decision{};
    });
    if (d.status == kNone) {
      spdlog::info("--resume auto: no complete checkpoint in {}; starting from step 0", run_dir.string());
      return std::nullopt;
    }
    const fs::path dir = d.text;
    const Verification v = verify_collectively(dir, world, context, config.checkpoint.io_threads);
    rank0_decides(world, context, [&] {
      if (v.damage.empty()) {
        check_resumable(v.checkpoint, config);
      } else if (resume != "auto") {
        throw IoError(detail::concat("--resume ", dir.string(), ": the checkpoint is damaged: ", v.damage));
      } else {
        const fs::path moved = io::mark_checkpoint_corrupt(dir);
        spdlog::warn(
            "checkpoint {} is damaged and was renamed {} (kept, never loaded again): {}; trying the one "
            "before",
            dir.string(), moved.string(), v.damage);
      }
      return Decision{};
    });
    if (v.damage.empty()) return v.checkpoint;
  }
}

std::optional<fs::path> choose_resume_checkpoint(const std::string& resume, const TrainConfig& config,
                                                 dist::Communicator* world, const ContextPtr& context) {
  const std::optional<io::CheckpointReader> chosen = open_resume_checkpoint(resume, config, world, context);
  if (!chosen) return std::nullopt;
  return chosen->dir();
}

}  // namespace coat::train
