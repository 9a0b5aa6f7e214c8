#include "coat/train/train_config.h"

#include <fstream>
#include <limits>
#include <sstream>

namespace coat::train {

namespace {

DataConfig read_data(ConfigSection s) {
  DataConfig d;
  d.path = s.require<std::string>("path");
  d.format = s.choice("format", d.format, {"coat", "u16", "u32"});
  d.tokenizer = s.get<std::string>("tokenizer", "");
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
  t.device = s.choice("device", t.device, {"cpu", "cuda"});
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
  t.on_nonfinite = s.choice("on_nonfinite", t.on_nonfinite, {"stop", "skip"});
  t.init_from = s.get<std::string>("init_from", "");
  t.recompute = s.choice("recompute", t.recompute, {"none", "blocks"});
  s.finish();
  return t;
}

// recipe: precision.recipe, which "auto" state storages follow.
OptimConfig read_optim(ConfigSection s, const std::string& recipe) {
  OptimConfig o;
  o.lr = s.require<double>("lr");
  s.check_range("lr", o.lr, 0.0, 10.0);
  o.schedule = s.choice("schedule", o.schedule, {"constant", "linear", "cosine"});
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
  const std::vector<std::string> state_dtypes = {"auto", "fp32", "bf16", "fp8", "fp8_expand"};
  const auto concrete = [&recipe](const std::string& dtype) {
    return dtype == "auto" ? default_state_dtype(recipe) : dtype;
  };
  o.state_dtype = concrete(s.choice("state_dtype", "auto", state_dtypes));
  o.exp_avg_dtype = concrete(s.choice("exp_avg_dtype", o.state_dtype, state_dtypes));
  o.exp_avg_sq_dtype = concrete(s.choice("exp_avg_sq_dtype", o.state_dtype, state_dtypes));
  o.exp_avg_fp8 = s.choice("exp_avg_fp8", o.exp_avg_fp8, {"e4m3", "e5m2"});
  o.exp_avg_sq_fp8 = s.choice("exp_avg_sq_fp8", o.exp_avg_sq_fp8, {"e4m3", "e5m2"});
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
    models::make_recipe("bf16", layers, num_layers);
  } catch (const InvalidArgument& e) {
    throw ConfigError(detail::concat("config: ", e.what()));
  }
  return layers;
}

PrecisionConfig read_precision(ConfigSection s, int64_t num_layers) {
  PrecisionConfig p;
  p.recipe = s.choice("recipe", p.recipe, {"fp32", "bf16", "fp8", "fp8_block", "coat"});
  p.bf16_layers = read_bf16_layers(s, num_layers);
  s.finish();
  return p;
}

}  // namespace

std::string default_state_dtype(const std::string& recipe) {
  return recipe == "coat" ? "fp8_expand" : "fp32";
}

models::PrecisionRecipe recipe_of(const TrainConfig& c) {
  return models::make_recipe(c.precision.recipe, c.precision.bf16_layers, c.model.num_hidden_layers);
}

TrainConfig parse_train_config(const nlohmann::json& document, const std::string& source) {
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
    root.section("dist").finish();
    {
      ConfigSection k = root.section("checkpoint");
      c.checkpoint.interval = k.get<int64_t>("interval", c.checkpoint.interval);
      k.check_range<int64_t>("interval", c.checkpoint.interval, 0, int64_t{1} << 40);
      c.checkpoint.keep_last = k.get<int64_t>("keep_last", c.checkpoint.keep_last);
      k.check_range<int64_t>("keep_last", c.checkpoint.keep_last, 0, 1 << 20);
      k.finish();
    }
    {
      ConfigSection l = root.section("logging");
      c.logging.run_dir = l.get<std::string>("run_dir", "");
      c.logging.progress = l.choice("progress", c.logging.progress, {"auto", "on", "off"});
      l.finish();
    }
    root.finish();
    if (c.data.seq_len > c.model.max_position_embeddings) {
      throw ConfigError(detail::concat("config: 'data.seq_len' = ", c.data.seq_len,
                                       " is longer than 'model.max_position_embeddings' = ",
                                       c.model.max_position_embeddings));
    }
    if (c.optim.schedule != "constant" && c.optim.warmup_steps > c.train.max_steps) {
      throw ConfigError(detail::concat("config: 'optim.warmup_steps' = ", c.optim.warmup_steps, " is longer than 'train.max_steps' = ",
                                       c.train.max_steps, "; the ", c.optim.schedule, " schedule needs warmup <= max_steps"));
    }
    if (c.optim.apply_in_backward && c.accumulation_steps() != 1) {
      throw ConfigError(detail::concat("config: 'optim.apply_in_backward' updates each unit when its gradient is "
                                       "complete, which needs one micro-batch per step; 'train.global_batch_size' = ",
                                       c.train.global_batch_size, " is ", c.accumulation_steps(),
                                       " micro-batches of 'train.micro_batch_size' = ", c.train.micro_batch_size));
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
    nlohmann::json r;
    r["model"] = c.model.to_json();
    r["data"] = {{"path", c.data.path},     {"format", c.data.format},
                 {"tokenizer", c.data.tokenizer}, {"seq_len", c.data.seq_len},
                 {"validation_fraction", c.data.validation_fraction}, {"seed", c.data.seed}};
    r["train"] = {{"device", c.train.device},
                  {"micro_batch_size", c.train.micro_batch_size},
                  {"global_batch_size", c.train.global_batch_size},
                  {"max_steps", c.train.max_steps},
                  {"seed", c.train.seed},
                  {"eval_interval", c.train.eval_interval},
                  {"eval_batches", c.train.eval_batches},
                  {"log_interval", c.train.log_interval},
                  {"on_nonfinite", c.train.on_nonfinite},
                  {"init_from", c.train.init_from},
                  {"recompute", c.train.recompute}};
    r["optim"] = {{"lr", c.optim.lr},
                  {"schedule", c.optim.schedule},
                  {"warmup_steps", c.optim.warmup_steps},
                  {"min_lr_ratio", c.optim.min_lr_ratio},
                  {"beta1", c.optim.beta1},
                  {"beta2", c.optim.beta2},
                  {"eps", c.optim.eps},
                  {"weight_decay", c.optim.weight_decay},
                  {"clip_grad_norm", c.optim.clip_grad_norm},
                  {"decay_embeddings", c.optim.decay_embeddings},
                  {"decay_norms", c.optim.decay_norms},
                  {"state_dtype", c.optim.state_dtype},
                  {"exp_avg_dtype", c.optim.exp_avg_dtype},
                  {"exp_avg_sq_dtype", c.optim.exp_avg_sq_dtype},
                  {"exp_avg_fp8", c.optim.exp_avg_fp8},
                  {"exp_avg_sq_fp8", c.optim.exp_avg_sq_fp8},
                  {"state_group_size", c.optim.state_group_size},
                  {"apply_in_backward", c.optim.apply_in_backward}};
    r["precision"] = {{"recipe", c.precision.recipe}, {"bf16_layers", c.precision.bf16_layers}};
    r["dist"] = nlohmann::json::object();
    r["checkpoint"] = {{"interval", c.checkpoint.interval}, {"keep_last", c.checkpoint.keep_last}};
    r["logging"] = {{"run_dir", c.logging.run_dir}, {"progress", c.logging.progress}};
    c.resolved = std::move(r);
    return c;
  } catch (const ConfigError& e) {
    throw ConfigError(detail::concat(source, ": ", e.what()));
  }
}

TrainConfig load_train_config(const std::filesystem::path& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw ConfigError(detail::concat("cannot open config file '", path.string(), "'"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  if (doc.is_discarded()) {
    // Re-parse with exceptions for the position of the syntax error.
    try {
      doc = nlohmann::json::parse(text.str(), nullptr, true, true);
    } catch (const nlohmann::json::parse_error& e) {
      throw ConfigError(detail::concat(path.string(), ": not valid JSON: ", e.what()));
    }
  }
  for (const std::string& o : overrides) apply_override(doc, o);
  return parse_train_config(doc, path.string());
}

namespace {

// The storage of one AdamW moment from its config strings (validated by the config reader).
ops::MomentSpec moment_spec(const std::string& dtype, const std::string& fp8, int64_t group_size) {
  ops::MomentSpec spec;
  if (dtype == "fp32") {
    spec.encoding = ops::MomentEncoding::F32;
  } else if (dtype == "bf16") {
    spec.encoding = ops::MomentEncoding::BF16;
  } else if (dtype == "fp8") {
    spec.encoding = ops::MomentEncoding::FP8;
  } else if (dtype == "fp8_expand") {
    spec.encoding = ops::MomentEncoding::FP8Expand;
  } else {
    throw ConfigError(detail::concat("config: optimizer state dtype '", dtype, "' is not one of fp32, bf16, fp8, fp8_expand"));
  }
  if (fp8 == "e4m3") {
    spec.fp8 = DType::E4M3;
  } else if (fp8 == "e5m2") {
    spec.fp8 = DType::E5M2;
  } else {
    throw ConfigError(detail::concat("config: optimizer state fp8 format '", fp8, "' is not one of e4m3, e5m2"));
  }
  spec.group_size = group_size;
  return spec;
}

}  // namespace

ops::MomentSpec exp_avg_spec(const OptimConfig& o) {
  return moment_spec(o.exp_avg_dtype.empty() ? o.state_dtype : o.exp_avg_dtype, o.exp_avg_fp8, o.state_group_size);
}

ops::MomentSpec exp_avg_sq_spec(const OptimConfig& o) {
  return moment_spec(o.exp_avg_sq_dtype.empty() ? o.state_dtype : o.exp_avg_sq_dtype, o.exp_avg_sq_fp8,
                     o.state_group_size);
}

}  // namespace coat::train
