// coat-generate: samples text from a checkpoint.
//   coat-generate --checkpoint runs/tiny [--prompt "In the beginning"] [--tokens 64] [--temperature 0.8]
//                 [--top-k 40] [--seed 1] [--tokenizer data/kjv/kjv.model] [--samples 3]
//   --tokenizer: a SentencePiece .model, or an HF tokenizer.json (or its directory; default for an HF
//                 import: tokenizer.json of the directory it came from). A tokenizer.json prompt is encoded
//                 natively (Llama-2/3, OLMo-2 files); a file with features the native encoder lacks goes to
//                 the Python `tokenizers` library (scripts/hf_encode.py), and stderr names the feature;
//                 --prompt-ids 128000,9906 gives it as ids instead. --show-special prints special tokens (<s>, <|eot_id|>) instead of
//                 dropping them.
//   coat-generate --checkpoint DIR --ids 1,5,9 --logits-out logits.f32   (raw float32 logits [T, V], for
//                 parity checks against other implementations)
//   A prompt (or --ids) longer than the model's max_position_embeddings is an error; generating past it slides
//   the window (each new token sees the last max_position_embeddings tokens) and says so on stderr.
//   --device cuda --precision bf16: run the model as the trainer's bf16 recipe does (BF16 compute copy of the
//                 FP32 weights, BF16 activations and logits); fp32 is the CPU reference
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>

#include "coat/data/text_tokenizer.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/train/model_loader.h"

namespace {

int sample(const std::vector<double>& logits, double temperature, int top_k, std::mt19937_64& rng) {
  const int v = static_cast<int>(logits.size());
  if (temperature <= 0.0) return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> order(static_cast<size_t>(v));
  for (int i = 0; i < v; ++i) order[static_cast<size_t>(i)] = i;
  const int k = top_k > 0 ? std::min(top_k, v) : v;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int a, int b) { return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)]; });
  std::vector<double> p(static_cast<size_t>(k));
  const double top = logits[static_cast<size_t>(order[0])];
  for (int i = 0; i < k; ++i) p[static_cast<size_t>(i)] = std::exp((logits[static_cast<size_t>(order[static_cast<size_t>(i)])] - top) / temperature);
  std::discrete_distribution<int> d(p.begin(), p.end());
  return order[static_cast<size_t>(d(rng))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coat-generate: sample text from a coat-train checkpoint"};
  std::string checkpoint, prompt, tokenizer_path, ids_text, logits_out, device = "cpu", precision = "fp32";
  int tokens = 64, top_k = 40, samples = 1;
  double temperature = 0.8;
  uint64_t seed = 1;
  app.add_option("--checkpoint", checkpoint, "checkpoint directory or run directory")->required();
  app.add_option("--prompt", prompt, "text to continue");
  app.add_option("--tokens", tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  app.add_option("--temperature", temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", top_k, "sample among the k most likely tokens (0 = all)")->check(CLI::Range(0, 1 << 30));
  app.add_option("--seed", seed, "sampling seed");
  app.add_option("--samples", samples, "number of samples")->check(CLI::Range(1, 1000));
  bool show_special = false;
  app.add_option("--tokenizer", tokenizer_path,
                 "SentencePiece .model or HF tokenizer.json (default: the run's data.tokenizer)");
  app.add_option("--ids,--prompt-ids", ids_text, "comma-separated token ids instead of a prompt");
  app.add_flag("--show-special", show_special, "print special tokens instead of dropping them");
  app.add_option("--logits-out", logits_out, "write the float32 logits [T, V] of the ids/prompt to this file and exit");
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision, "fp32 (CPU reference) or bf16 (the trainer's bf16 recipe)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  CLI11_PARSE(app, argc, argv);
  try {
    if (device == "cuda" && precision == "fp32") {
      throw coat::InvalidArgument("--precision fp32 is the CPU reference; on CUDA use bf16 (cuDNN's fused attention runs in BF16)");
    }
    coat::ContextPtr ctx = coat::ops::make_context(device == "cuda" ? coat::Device::cuda(0) : coat::Device::cpu());
    const std::optional<coat::DType> compute =
        precision == "bf16" ? std::optional<coat::DType>(coat::DType::BF16) : std::nullopt;
    coat::train::LoadedModel loaded = coat::train::load_model(checkpoint, ctx, /*with_grads=*/false, compute);
    coat::models::Transformer& model = *loaded.model;
    const int64_t max_len = model.config().max_position_embeddings;
    const nlohmann::json& run_config = loaded.meta.at("config");  // an HF import holds only the model section
    if (tokenizer_path.empty() && run_config.contains("data")) {
      tokenizer_path = run_config.at("data").value("tokenizer", std::string());
    }
    // An HF import records the directory it came from, where its tokenizer.json may be.
    const std::filesystem::path source = loaded.meta.value("source", std::string());
    if (tokenizer_path.empty() && !source.empty() && std::filesystem::exists(source / "tokenizer.json")) {
      tokenizer_path = (source / "tokenizer.json").string();
    }

    std::vector<int32_t> context_ids;
    std::optional<coat::data::TextTokenizer> tok;
    if (!tokenizer_path.empty() && (ids_text.empty() || logits_out.empty())) {
      const std::filesystem::path encoder = std::filesystem::path(COAT_SCRIPTS_DIR) / "hf_encode.py";
      tok = coat::data::TextTokenizer::load(tokenizer_path, {show_special, encoder});
    }
    if (!ids_text.empty()) {
      std::stringstream ss(ids_text);
      for (std::string item; std::getline(ss, item, ',');) context_ids.push_back(std::stoi(item));
    } else {
      if (!tok) throw coat::InvalidArgument("no tokenizer: pass --tokenizer or --prompt-ids");
      if (!tok->python_encoder_reason().empty())
        std::cerr << "prompt encoded by Python `tokenizers`: " << tok->python_encoder_reason() << "\n";
      context_ids = tok->encode_prompt(prompt);
    }
    if (context_ids.empty()) throw coat::InvalidArgument("empty prompt");
    // A longer prompt is an error, not a silent cut: dropping its start would answer another question than
    // the one asked, and positions past max_position_embeddings were never trained.
    if (static_cast<int64_t>(context_ids.size()) > max_len) {
      throw coat::InvalidArgument(coat::detail::concat(
          ids_text.empty() ? "the prompt is " : "--ids holds ", context_ids.size(),
          " tokens, more than the model's max_position_embeddings = ", max_len,
          "; shorten it to at most ", max_len, " tokens (the model cannot attend further back)"));
    }
    for (int32_t id : context_ids) {
      if (id < 0 || id >= model.config().vocab_size) {
        throw coat::InvalidArgument(coat::detail::concat("token id ", id, " is outside the vocabulary [0, ",
                                                         model.config().vocab_size, ")"));
      }
    }
    auto logits_of = [&](const std::vector<int32_t>& ids) {
      std::vector<double> v(ids.begin(), ids.end());
      const coat::Tensor t = coat::ops::from_vector(ctx, {1, static_cast<int64_t>(ids.size())}, coat::DType::I32, v);
      return model.logits(t);
    };
    if (!logits_out.empty()) {
      const coat::Tensor l = logits_of(context_ids);
      const std::vector<double> all = coat::ops::to_double_vector(l);
      std::vector<float> f(all.begin(), all.end());
      std::ofstream out(logits_out, std::ios::binary);
      out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size() * sizeof(float)));
      out.close();  // a full disk may only show when the buffer is flushed
      if (!out) {
        throw coat::IoError(coat::detail::concat("cannot write '", logits_out, "': ", std::strerror(errno)));
      }
      std::printf("wrote logits [%zu, %lld] to %s\n", context_ids.size(), static_cast<long long>(model.config().vocab_size),
                  logits_out.c_str());
      return 0;
    }
    if (!tok) {
      throw coat::InvalidArgument(
          "text generation needs a tokenizer (--tokenizer); --ids alone needs --logits-out");
    }
    std::mt19937_64 rng(seed);
    const int64_t vocab = model.config().vocab_size;
    // Generating past max_position_embeddings: each new token then conditions on the last max_len tokens (a
    // sliding window), said once on stderr.
    if (static_cast<int64_t>(context_ids.size()) + tokens > max_len) {
      std::fprintf(stderr,
                   "coat-generate: note: prompt (%zu tokens) + --tokens %d exceeds max_position_embeddings = %lld: "
                   "from token %lld on, each new token sees only the last %lld tokens\n",
                   context_ids.size(), tokens, static_cast<long long>(max_len),
                   static_cast<long long>(max_len - static_cast<int64_t>(context_ids.size()) + 1),
                   static_cast<long long>(max_len));
    }
    for (int s = 0; s < samples; ++s) {
      std::vector<int32_t> ids = context_ids;
      for (int i = 0; i < tokens; ++i) {
        std::vector<int32_t> window(ids.end() - std::min<int64_t>(static_cast<int64_t>(ids.size()), max_len), ids.end());
        const coat::Tensor l = logits_of(window);
        const std::vector<double> all = coat::ops::to_double_vector(l);
        std::vector<double> last(all.end() - vocab, all.end());
        const int next = sample(last, temperature, top_k, rng);
        if (tok->ends_generation(next)) break;
        ids.push_back(next);
      }
      if (samples > 1) std::printf("--- sample %d ---\n", s + 1);
      std::printf("%s\n", tok->decode(ids).c_str());  // BOS and other special tokens only with --show-special
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-generate: error: %s\n", e.what());
    return 1;
  }
}
