// The training config: reading each section strictly into its typed struct, the cross-section checks, and
// each section's to_json (the resolved document).
#include "coat/train/train_config.h"

#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>

#include "coat/io/checkpoint_reader.h"
#include "coat/io/checkpoint.h"

namespace coat::train {

std::string_view to_string(DataFormat format) {
  switch (format) {
    case DataFormat::Coat: return "coat";
    case DataFormat::U16: return "u16";
    case DataFormat::U32: return "u32";
  }
  return "?";
}

std::string_view to_string(NonfinitePolicy policy) {
  switch (policy) {
    case NonfinitePolicy::Stop: return "stop";
    case NonfinitePolicy::Skip: return "skip";
  }
  return "?";
}

std::string_view to_string(ProgressDisplay progress) {
  switch (progress) {
    case ProgressDisplay::Auto: return "auto";
    case ProgressDisplay::On: return "on";
    case ProgressDisplay::Off: return "off";
  }
  return "?";
}

std::string_view to_string(ReduceDType dtype) {
  switch (dtype) {
    case ReduceDType::FP32: return "fp32";
    case ReduceDType::BF16: return "bf16";
  }
  return "?";
}

std::string_view state_dtype_name(ops::MomentEncoding encoding) {
  switch (encoding) {
    case ops::MomentEncoding::F32: return "fp32";
    case ops::MomentEncoding::BF16: return "bf16";
    case ops::MomentEncoding::FP8: return "fp8";
    case ops::MomentEncoding::FP8Expand: return "fp8_expand";
  }
  return "?";
}

ops::MomentEncoding parse_state_dtype(std::string_view name) {
  for (ops::MomentEncoding e : {ops::MomentEncoding::F32, ops::MomentEncoding::BF16, ops::MomentEncoding::FP8,
                                ops::MomentEncoding::FP8Expand}) {
    if (name == state_dtype_name(e)) return e;
  }
  throw ConfigError(
      detail::concat("config: optimizer state dtype '", name, "' is not one of fp32, bf16, fp8, fp8_expand"));
}

DType parse_moment_fp8(std::string_view name) {
  for (DType t : {DType::E4M3, DType::E5M2}) {
    if (name == dtype_name(t)) return t;
  }
  throw ConfigError(
      detail::concat("config: optimizer state fp8 format '", name, "' is not one of e4m3, e5m2"));
}

namespace {

// JSON strings from the enums' names (string_view is not a JSON string type of every nlohmann version).
std::string json_string(std::string_view spelling) { return std::string(spelling); }

DataConfig read_data(ConfigSection s) {
  DataConfig d;
  d.path = s.require<std::string>("path");
  d.format = s.choice("format", d.format, {DataFormat::Coat, DataFormat::U16, DataFormat::U32});
  d.tokenizer = s.get<std::string>("tokenizer", "");
  d.loss_mask = s.get<std::string>("loss_mask", "");
  d.seq_len = s.require<int64_t>("seq_len");
  s.check_range<int64_t>("seq_len", d.seq_len, 1, int64_t{1} << 20);
  d.validation_fraction = s.get<double>("validation_fraction", d.validation_fraction);
  s.check_range("validation_fraction", d.validation_fraction, 0.0, 0.5);
  d.seed = s.get<uint64_t>("seed", d.seed);
  s.finish();
  return d;
}

LoopConfig read_loop(ConfigSection s) {
  LoopConfig t;
  t.device = s.choice("device", t.device, {DeviceKind::CPU, DeviceKind::CUDA});
  t.micro_batch_size = s.get<int64_t>("micro_batch_size", t.micro_batch_size);
  s.check_range<int64_t>("micro_batch_size", t.micro_batch_size, 1, 1 << 20);
  t.global_batch_size = s.get<int64_t>("global_batch_size", t.micro_batch_size);
  s.check_range<int64_t>("global_batch_size", t.global_batch_size, 1, 1 << 24);
  if (t.global_batch_size % t.micro_batch_size != 0) {
    throw ConfigError(detail::concat("config: 'train.global_batch_size' = ", t.global_batch_size,
                                     " must be a multiple of 'train.micro_batch_size' = ", t.micro_batch_size));
  }
  t.max_steps = s.require<int64_t>("max_steps");
  s.check_range<int64_t>("max_steps", t.max_steps, 1, int64_t{1} << 40);
  t.seed = s.get<uint64_t>("seed", t.seed);
  t.eval_interval = s.get<int64_t>("eval_interval", t.eval_interval);
  s.check_range<int64_t>("eval_interval", t.eval_interval, 0, int64_t{1} << 40);
  t.eval_batches = s.get<int64_t>("eval_batches", t.eval_batches);
  s.check_range<int64_t>("eval_batches", t.eval_batches, 0, int64_t{1} << 30);
  t.log_interval = s.get<int64_t>("log_interval", t.log_interval);
  s.check_range<int64_t>("log_interval", t.log_interval, 1, int64_t{1} << 40);
  t.on_nonfinite = s.choice("on_nonfinite", t.on_nonfinite, {NonfinitePolicy::Stop, NonfinitePolicy::Skip});
  t.init_from = s.get<std::string>("init_from", "");
  t.recompute = s.choice("recompute", t.recompute, {models::Recompute::None, models::Recompute::Qkv,
                                                     models::Recompute::Blocks});
  t.deterministic = s.get<bool>("deterministic", t.deterministic);
  s.finish();
  return t;
}

// One moment's storage: a concrete one, or "auto" (the recipe's storage, default_state_dtype). `fallback` is
// the storage when the key is absent.
ops::MomentEncoding read_state_dtype(ConfigSection& s, const std::string& key, const std::string& fallback,
                                     models::RecipeKind recipe) {
  constexpr ops::MomentEncoding kStorages[] = {ops::MomentEncoding::F32, ops::MomentEncoding::BF16,
                                               ops::MomentEncoding::FP8, ops::MomentEncoding::FP8Expand};
  std::vector<std::string> names = {"auto"};
  for (ops::MomentEncoding e : kStorages) names.emplace_back(state_dtype_name(e));
  const std::string chosen = s.choice(key, fallback, names);
  return chosen == "auto" ? default_state_dtype(recipe) : parse_state_dtype(chosen);
}

// recipe: precision.recipe, which "auto" state storages follow.
OptimConfig read_optim(ConfigSection s, models::RecipeKind recipe) {
  OptimConfig o;
  o.lr = s.require<double>("lr");
  s.check_range("lr", o.lr, 0.0, 10.0);
  o.schedule = s.choice("schedule", o.schedule,
                        {optim::LrSchedule::Constant, optim::LrSchedule::Linear, optim::LrSchedule::Cosine});
  o.warmup_steps = s.get<int64_t>("warmup_steps", o.warmup_steps);
  s.check_range<int64_t>("warmup_steps", o.warmup_steps, 0, int64_t{1} << 40);
  o.min_lr_ratio = s.get<double>("min_lr_ratio", o.min_lr_ratio);
  s.check_range("min_lr_ratio", o.min_lr_ratio, 0.0, 1.0);
  o.beta1 = s.get<double>("beta1", o.beta1);
  s.check_range("beta1", o.beta1, 0.0, 0.999999);
  o.beta2 = s.get<double>("beta2", o.beta2);
  s.check_range("beta2", o.beta2, 0.0, 0.999999999);
  o.eps = s.get<double>("eps", o.eps);
  s.check_range("eps", o.eps, 0.0, 1.0);
  o.weight_decay = s.get<double>("weight_decay", o.weight_decay);
  s.check_range("weight_decay", o.weight_decay, 0.0, 10.0);
  o.clip_grad_norm = s.get<double>("clip_grad_norm", o.clip_grad_norm);
  s.check_range("clip_grad_norm", o.clip_grad_norm, 0.0, 1e9);
  o.decay_embeddings = s.get<bool>("decay_embeddings", o.decay_embeddings);
  o.decay_norms = s.get<bool>("decay_norms", o.decay_norms);
  // "auto" is the recipe's storage; the parsed config holds only concrete storages.
  o.state_dtype = read_state_dtype(s, "state_dtype", "auto", recipe);
  const std::string state_dtype(state_dtype_name(o.state_dtype));
  o.exp_avg_dtype = read_state_dtype(s, "exp_avg_dtype", state_dtype, recipe);
  o.exp_avg_sq_dtype = read_state_dtype(s, "exp_avg_sq_dtype", state_dtype, recipe);
  o.exp_avg_fp8 = s.choice("exp_avg_fp8", o.exp_avg_fp8, {DType::E4M3, DType::E5M2}, dtype_name);
  o.exp_avg_sq_fp8 = s.choice("exp_avg_sq_fp8", o.exp_avg_sq_fp8, {DType::E4M3, DType::E5M2}, dtype_name);
  o.state_group_size = s.get<int64_t>("state_group_size", o.state_group_size);
  s.check_range<int64_t>("state_group_size", o.state_group_size, 1, 65536);
  o.apply_in_backward = s.get<bool>("apply_in_backward", o.apply_in_backward);
  s.finish();
  return o;
}

// precision.bf16_layers: a JSON array of integers; each in range for a model of num_layers blocks.
std::vector<int64_t> read_bf16_layers(ConfigSection& s, int64_t num_layers) {
  const nlohmann::json list = s.get<nlohmann::json>("bf16_layers", nlohmann::json::array());
  const auto wrong = [&] {
    throw ConfigError(
        detail::concat("config: '", s.where("bf16_layers"),
                       "' must be an array of integers (block indices, negative ones counting from "
                       "the end), got ",
                       list.dump()));
  };
  if (!list.is_array()) wrong();
  std::vector<int64_t> layers;
  constexpr auto kLargest = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const nlohmann::json& v : list) {
    // An unsigned value past int64's range would wrap around to a valid negative index.
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > kLargest)) wrong();
    layers.push_back(v.get<int64_t>());
  }
  // The range, as the recipe checks it (the message names precision.bf16_layers).
  try {
    models::make_recipe(models::RecipeKind::BF16, layers, num_layers);
  } catch (const InvalidArgument& e) {
    throw ConfigError(detail::concat("config: ", e.what()));
  }
  return layers;
}

PrecisionConfig read_precision(ConfigSection s, int64_t num_layers) {
  using models::RecipeKind;
  PrecisionConfig p;
  p.recipe = s.choice("recipe", p.recipe,
                      {RecipeKind::FP32, RecipeKind::BF16, RecipeKind::FP8, RecipeKind::FP8Block,
                       RecipeKind::Coat});
  p.bf16_layers = read_bf16_layers(s, num_layers);
  p.compress_attention = s.get<bool>("compress_attention", p.compress_attention);
  p.cache_weight_transpose = s.get<bool>("cache_weight_transpose", p.cache_weight_transpose);
  if (!p.cache_weight_transpose && p.recipe != RecipeKind::FP8 && p.recipe != RecipeKind::Coat) {
    throw ConfigError(detail::concat("config: 'precision.cache_weight_transpose' = false makes the FP8 weights' "
                                     "transposes in the backward, which only the per-tensor FP8 recipes (fp8, "
                                     "coat) keep; 'precision.recipe' is ", models::to_string(p.recipe)));
  }
  s.finish();
  return p;
}

DistConfig read_dist(ConfigSection s) {
  DistConfig d;
  d.world_size = s.get<int64_t>("world_size", d.world_size);
  s.check_range<int64_t>("world_size", d.world_size, 0, int64_t{1} << 20);
  d.shard_size = s.get<int64_t>("shard_size", d.shard_size);
  s.check_range<int64_t>("shard_size", d.shard_size, 0, int64_t{1} << 20);
  if (d.world_size > 0 && d.shard_size > 0 && d.world_size % d.shard_size != 0) {
    throw ConfigError(detail::concat("config: 'dist.shard_size' = ", d.shard_size,
                                     " must divide 'dist.world_size' = ", d.world_size,
                                     " (each group of shard_size ranks holds one copy of the shards)"));
  }
  d.reshard_after_forward = s.get<bool>("reshard_after_forward", d.reshard_after_forward);
  d.prefetch = s.get<int64_t>("prefetch", d.prefetch);
  s.check_range<int64_t>("prefetch", d.prefetch, 0, 1 << 10);
  d.reduce_dtype = s.choice("reduce_dtype", d.reduce_dtype, {ReduceDType::FP32, ReduceDType::BF16});
  d.timeout_s = s.get<double>("timeout_s", d.timeout_s);
  if (!(d.timeout_s > 0.0) || d.timeout_s > 1e7) {
    throw ConfigError(detail::concat("config: 'dist.timeout_s' = ", d.timeout_s,
                                     " is out of range; expected 0 < value <= 1e+07 (seconds)"));
  }
  d.fp8_all_gather = s.get<bool>("fp8_all_gather", d.fp8_all_gather);
  s.finish();
  return d;
}

CheckpointConfig read_checkpoint(ConfigSection s) {
  CheckpointConfig k;
  k.interval = s.get<int64_t>("interval", k.interval);
  s.check_range<int64_t>("interval", k.interval, 0, int64_t{1} << 40);
  k.keep_last = s.get<int64_t>("keep_last", k.keep_last);
  s.check_range<int64_t>("keep_last", k.keep_last, 0, 1 << 20);
  k.async = s.get<bool>("async", k.async);
  const int64_t io_threads = s.get<int64_t>("io_threads", k.io_threads);
  s.check_range<int64_t>("io_threads", io_threads, 1, io::kMaxIoThreads);
  k.io_threads = static_cast<int>(io_threads);
  s.finish();
  return k;
}

LoggingConfig read_logging(ConfigSection s) {
  LoggingConfig l;
  l.run_dir = s.get<std::string>("run_dir", "");
  l.progress =
      s.choice("progress", l.progress, {ProgressDisplay::Auto, ProgressDisplay::On, ProgressDisplay::Off});
  s.finish();
  return l;
}

}  // namespace

nlohmann::json DataConfig::to_json() const {
  return {{"path", path},       {"format", json_string(to_string(format))},
          {"tokenizer", tokenizer}, {"loss_mask", loss_mask}, {"seq_len", seq_len},
          {"validation_fraction", validation_fraction}, {"seed", seed}};
}

nlohmann::json LoopConfig::to_json() const {
  return {{"device", json_string(to_string(device))},
          {"micro_batch_size", micro_batch_size},
          {"global_batch_size", global_batch_size},
          {"max_steps", max_steps},
          {"seed", seed},
          {"eval_interval", eval_interval},
          {"eval_batches", eval_batches},
          {"log_interval", log_interval},
          {"on_nonfinite", json_string(to_string(on_nonfinite))},
          {"init_from", init_from},
          {"recompute", json_string(to_string(recompute))},
          {"deterministic", deterministic}};
}

nlohmann::json OptimConfig::to_json() const {
  return {{"lr", lr},
          {"schedule", json_string(to_string(schedule))},
          {"warmup_steps", warmup_steps},
          {"min_lr_ratio", min_lr_ratio},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eps", eps},
          {"weight_decay", weight_decay},
          {"clip_grad_norm", clip_grad_norm},
          {"decay_embeddings", decay_embeddings},
          {"decay_norms", decay_norms},
          // Checkpoints compare these spellings when a run resumes (Trainer::load_optimizer_states).
          {"state_dtype", json_string(state_dtype_name(state_dtype))},
          {"exp_avg_dtype", json_string(state_dtype_name(exp_avg_encoding()))},
          {"exp_avg_sq_dtype", json_string(state_dtype_name(exp_avg_sq_encoding()))},
          {"exp_avg_fp8", json_string(dtype_name(exp_avg_fp8))},
          {"exp_avg_sq_fp8", json_string(dtype_name(exp_avg_sq_fp8))},
          {"state_group_size", state_group_size},
          {"apply_in_backward", apply_in_backward}};
}

nlohmann::json PrecisionConfig::to_json() const {
  return {{"recipe", json_string(to_string(recipe))},
          {"bf16_layers", bf16_layers},
          {"compress_attention", compress_attention},
          {"cache_weight_transpose", cache_weight_transpose}};
}

nlohmann::json DistConfig::to_json() const {
  return {{"world_size", world_size},
          {"shard_size", shard_size},
          {"reshard_after_forward", reshard_after_forward},
          {"prefetch", prefetch},
          {"reduce_dtype", json_string(to_string(reduce_dtype))},
          {"timeout_s", timeout_s},
          {"fp8_all_gather", fp8_all_gather}};
}

nlohmann::json CheckpointConfig::to_json() const {
  return {{"interval", interval}, {"keep_last", keep_last}, {"async", async}, {"io_threads", io_threads}};
}

nlohmann::json LoggingConfig::to_json() const {
  return {{"run_dir", run_dir}, {"progress", json_string(to_string(progress))}};
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json r;
  r["model"] = model.to_json();
  r["data"] = data.to_json();
  r["train"] = train.to_json();
  r["optim"] = optim.to_json();
  r["precision"] = precision.to_json();
  r["dist"] = dist.to_json();
  r["checkpoint"] = checkpoint.to_json();
  r["logging"] = logging.to_json();
  return r;
}

ops::MomentEncoding default_state_dtype(models::RecipeKind recipe) {
  return recipe == models::RecipeKind::Coat ? ops::MomentEncoding::FP8Expand : ops::MomentEncoding::F32;
}

models::PrecisionRecipe recipe_of(const TrainConfig& c) {
  models::PrecisionRecipe r =
      models::make_recipe(c.precision.recipe, c.precision.bf16_layers, c.model.num_hidden_layers);
  r.compress_attention = c.precision.compress_attention;
  r.keep_weight_transpose = c.precision.cache_weight_transpose;
  return r;
}

void check_batch_split(const LoopConfig& train, int64_t ranks) {
  const int64_t per_step = train.micro_batch_size * ranks;
  if (train.global_batch_size % per_step == 0) return;
  throw ConfigError(detail::concat("config: 'train.global_batch_size' = ", train.global_batch_size,
                                   " must be a multiple of 'train.micro_batch_size' (", train.micro_batch_size,
                                   ") x the ", ranks, " ranks of 'dist.world_size' = ", per_step,
                                   ": every rank runs whole micro-batches of one global batch"));
}

namespace {

// train.recompute = qkv makes q, k and v again from the q/k/v projection's saved input, which fp8_block keeps
// grouped along the tokens (its forward groups along the features): refused there, unless its layers are BF16.
void check_recompute(const TrainConfig& c) {
  if (c.train.recompute != models::Recompute::Qkv) return;
  const models::PrecisionRecipe recipe = recipe_of(c);
  const int64_t layer = models::first_block_scaled_qkv(recipe, c.model.num_hidden_layers);
  if (layer < 0) return;
  throw ConfigError(detail::concat("config: 'train.recompute' = qkv makes q, k and v again from the input the "
                                   "q/k/v projection keeps, but 'precision.recipe' = ", recipe.name,
                                   " keeps it (block ", layer, ") as 1x128 groups along the tokens, not the "
                                   "forward's groups; use 'train.recompute' = none or blocks"));
}

}  // namespace

TrainConfig parse_train_config(const nlohmann::json& document, const std::string& source, int launched_world) {
  try {
    if (!document.is_object()) throw ConfigError("config: the document must be a JSON object with sections");
    ConfigSection root(document, "");
    TrainConfig c;
    c.model = models::ModelConfig::from_config(root.section("model"));
    c.data = read_data(root.section("data"));
    c.train = read_loop(root.section("train"));
    // The recipe first: the optimizer states' default storage follows it.
    c.precision = read_precision(root.section("precision"), c.model.num_hidden_layers);
    c.optim = read_optim(root.section("optim"), c.precision.recipe);
    c.dist = read_dist(root.section("dist"));
    if (launched_world >= 1) {
      if (c.dist.world_size > 0 && c.dist.world_size != launched_world) {
        throw ConfigError(detail::concat("config: 'dist.world_size' = ", c.dist.world_size, " but mpirun started ",
                                         launched_world, " rank", launched_world > 1 ? "s" : "",
                                         "; leave it unset (0) to take the launched world"));
      }
      c.dist.world_size = launched_world;
    }
    c.checkpoint = read_checkpoint(root.section("checkpoint"));
    c.logging = read_logging(root.section("logging"));
    root.finish();
    if (c.data.seq_len > c.model.max_position_embeddings) {
      throw ConfigError(detail::concat("config: 'data.seq_len' = ", c.data.seq_len,
                                       " is longer than 'model.max_position_embeddings' = ",
                                       c.model.max_position_embeddings));
    }
    if (c.optim.schedule != optim::LrSchedule::Constant && c.optim.warmup_steps > c.train.max_steps) {
      throw ConfigError(detail::concat("config: 'optim.warmup_steps' = ", c.optim.warmup_steps,
                                       " is longer than 'train.max_steps' = ", c.train.max_steps, "; the ",
                                       to_string(c.optim.schedule), " schedule needs warmup <= max_steps"));
    }
    check_batch_split(c.train, c.ranks());
    check_recompute(c);
    if (c.optim.apply_in_backward && c.accumulation_steps() != 1) {
      throw ConfigError(detail::concat("config: 'optim.apply_in_backward' updates each unit when its gradient is "
                                       "complete, which needs one micro-batch per step", c.ranks() > 1 ? " and rank" : "",
                                       "; 'train.global_batch_size' = ", c.train.global_batch_size, " is ",
                                       c.accumulation_steps(), " micro-batches of 'train.micro_batch_size' = ",
                                       c.train.micro_batch_size, c.ranks() > 1 ? " per rank" : ""));
    }
    if (c.optim.apply_in_backward && c.optim.clip_grad_norm != 0.0) {
      throw ConfigError(detail::concat("config: 'optim.apply_in_backward' cannot clip by the global gradient norm "
                                       "(known only after the last unit was updated); set 'optim.clip_grad_norm' "
                                       "= 0 (it is ", c.optim.clip_grad_norm, ")"));
    }
    if (c.logging.run_dir.empty()) {
      c.logging.run_dir = "runs/" + std::filesystem::path(source).stem().string();
    }
    // The resolved document: every value the run uses, defaults included.
    c.resolved = c.to_json();
    return c;
  } catch (const ConfigError& e) {
    throw ConfigError(detail::concat(source, ": ", e.what()));
  }
}

void model_from_init_checkpoint(nlohmann::json& document, const std::string& source) {
  if (!document.is_object() || document.contains("model")) return;
  const auto train = document.find("train");
  if (train == document.end() || !train->is_object()) return;
  const auto init = train->find("init_from");
  if (init == train->end() || !init->is_string() || init->get<std::string>().empty()) return;
  const std::string from = init->get<std::string>();
  try {
    const std::filesystem::path dir = io::resolve_checkpoint_dir(from);
    const nlohmann::json meta = io::CheckpointReader::open(dir).meta();
    if (!meta.contains("config") || !meta.at("config").contains("model")) {
      throw IoError(detail::concat("its meta.json (", (dir / "meta.json").string(), ") has no config.model"));
    }
    document["model"] = meta.at("config").at("model");
  } catch (const Error& e) {
    throw ConfigError(detail::concat(source, ": no 'model' section, and the model of 'train.init_from' = '", from,
                                     "' could not be read: ", e.what()));
  }
}

TrainConfig parse_train_config_text(std::string_view text, const std::vector<std::string>& overrides,
                                    const std::string& source, int launched_world) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  if (doc.is_discarded()) {
    // Re-parse with exceptions for the position of the syntax error (or a number out of range: out_of_range).
    try {
      doc = nlohmann::json::parse(text, nullptr, true, true);
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(detail::concat(source, ": not valid JSON: ", e.what()));
    }
    throw ConfigError(detail::concat(source, ": not valid JSON"));
  }
  for (const std::string& o : overrides) apply_override(doc, o);
  model_from_init_checkpoint(doc, source);
  return parse_train_config(doc, source, launched_world);
}

TrainConfig load_train_config(const std::filesystem::path& path, const std::vector<std::string>& overrides,
                              int launched_world) {
  std::ifstream in(path);
  if (!in) throw ConfigError(detail::concat("cannot open config file '", path.string(), "'"));
  std::stringstream text;
  text << in.rdbuf();
  return parse_train_config_text(text.str(), overrides, path.string(), launched_world);
}

namespace {

// The storage of one AdamW moment.
ops::MomentSpec moment_spec(ops::MomentEncoding encoding, DType fp8, int64_t group_size) {
  ops::MomentSpec spec;
  spec.encoding = encoding;
  spec.fp8 = fp8;
  spec.group_size = group_size;
  return spec;
}

}  // namespace

int64_t shard_alignment(const OptimConfig& o) {
  return std::lcm<int64_t>(o.state_group_size, 128);
}

ops::MomentSpec exp_avg_spec(const OptimConfig& o) {
  return moment_spec(o.exp_avg_encoding(), o.exp_avg_fp8, o.state_group_size);
}

ops::MomentSpec exp_avg_sq_spec(const OptimConfig& o) {
  return moment_spec(o.exp_avg_sq_encoding(), o.exp_avg_sq_fp8, o.state_group_size);
}

}  // namespace coat::train
