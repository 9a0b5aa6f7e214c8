// tokenizer.json reading: the model's vocabulary by id, the added tokens, the decoder, and the special ids
// from the files HF keeps beside it.
#include "coat/data/hf_tokenizer.h"

#include <fstream>

#include "coat/core/error.h"

namespace coat::data {

namespace fs = std::filesystem;

nlohmann::json read_tokenizer_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw IoError(detail::concat("cannot open tokenizer file ", path));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw IoError(detail::concat("tokenizer file ", path, " is not valid JSON: ", e.what()));
  }
}

namespace {

[[noreturn]] void malformed(const fs::path& path, const std::string& what) {
  throw InvalidArgument(detail::concat("[tokenizer.json] ", path, ": ", what));
}

/// model.vocab as (token, id) pairs: an object for BPE, WordLevel and WordPiece, a [piece, score] list for
/// Unigram.
std::vector<std::pair<std::string, int64_t>> model_vocab(const nlohmann::json& model, const fs::path& path) {
  if (!model.is_object() || !model.contains("vocab")) malformed(path, "no model.vocab");
  const nlohmann::json& vocab = model.at("vocab");
  std::vector<std::pair<std::string, int64_t>> out;
  if (vocab.is_object()) {
    for (const auto& [token, id] : vocab.items()) {
      if (!id.is_number_integer())
        malformed(path, detail::concat("model.vocab['", token, "'] is not an id: ", id.dump()));
      out.emplace_back(token, id.get<int64_t>());
    }
  } else if (vocab.is_array()) {
    for (size_t i = 0; i < vocab.size(); ++i) {
      if (!vocab[i].is_array() || vocab[i].empty() || !vocab[i][0].is_string()) {
        malformed(path,
                  detail::concat("model.vocab[", i, "] is not a [piece, score] pair: ", vocab[i].dump()));
      }
      out.emplace_back(vocab[i][0].get<std::string>(), static_cast<int64_t>(i));
    }
  } else {
    malformed(path, "model.vocab is neither an object nor a list");
  }
  return out;
}

/// tokenizer_config.json spells a token as a string or as {"content": ...}.
std::optional<std::string> config_token(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const nlohmann::json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string())
    return v.at("content").get<std::string>();
  return std::nullopt;
}

/// A TemplateProcessing's "single" template: the special token ids before and after the sequence.
void template_special_ids(const nlohmann::json& processor, int32_t* bos, std::vector<int32_t>* eos) {
  if (!processor.is_object()) return;
  if (processor.value("type", std::string()) == "Sequence" && processor.contains("processors")) {
    for (const nlohmann::json& p : processor.at("processors")) template_special_ids(p, bos, eos);
    return;
  }
  if (processor.value("type", std::string()) != "TemplateProcessing" || !processor.contains("single")) return;
  const nlohmann::json& specials = processor.value("special_tokens", nlohmann::json::object());
  bool after_sequence = false;
  for (const nlohmann::json& piece : processor.at("single")) {
    if (piece.contains("Sequence")) {
      after_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken")) continue;
    const std::string name = piece.at("SpecialToken").value("id", std::string());
    if (!specials.contains(name) || specials.at(name).value("ids", nlohmann::json::array()).empty()) continue;
    const auto id = specials.at(name).at("ids").at(0).get<int32_t>();
    if (!after_sequence && *bos < 0) *bos = id;
    if (after_sequence && eos->empty()) eos->push_back(id);
  }
}

}  // namespace

HfTokenizer HfTokenizer::load(const fs::path& path) {
  HfTokenizer t;
  t.path_ = fs::is_directory(path) ? path / "tokenizer.json" : path;
  const nlohmann::json j = read_tokenizer_json(t.path_);
  if (!j.is_object() || !j.contains("model"))
    malformed(t.path_, "no \"model\" object (is it a tokenizer.json?)");
  int64_t largest = -1;
  std::vector<std::pair<std::string, int64_t>> vocab = model_vocab(j.at("model"), t.path_);
  for (const auto& [token, id] : vocab) {
    if (id < 0 || id >= (int64_t{1} << 31) - 1)
      malformed(t.path_, detail::concat("token '", token, "' has id ", id));
    largest = std::max(largest, id);
  }
  t.model_tokens_.resize(static_cast<size_t>(largest + 1));
  for (auto& [token, id] : vocab) {
    t.ids_by_token_.emplace(token, static_cast<int32_t>(id));
    t.model_tokens_[static_cast<size_t>(id)] = std::move(token);
  }
  for (const nlohmann::json& added : j.value("added_tokens", nlohmann::json::array())) {
    if (!added.contains("id") || !added.at("id").is_number_integer() || !added.contains("content") ||
        !added.at("content").is_string()) {
      malformed(t.path_,
                detail::concat("an added token without an integer id and a content: ", added.dump()));
    }
    const auto id = added.at("id").get<int32_t>();
    const auto content = added.at("content").get<std::string>();
    if (id < 0) malformed(t.path_, detail::concat("added token '", content, "' has id ", id));
    largest = std::max<int64_t>(largest, id);
    t.added_tokens_[id] = content;
    t.ids_by_token_[content] = id;
    if (added.value("special", false)) t.special_contents_.insert(content);
  }
  t.vocab_size_ = static_cast<int32_t>(largest + 1);
  t.decoder_ = HfDecoder::from_json(j.value("decoder", nlohmann::json()), t.path_.string());
  t.post_processor_ = j.value("post_processor", nlohmann::json());
  t.find_special_ids();
  return t;
}

void HfTokenizer::find_special_ids() {
  const fs::path dir = path_.parent_path();
  if (fs::exists(dir / "generation_config.json")) {
    const nlohmann::json g = read_tokenizer_json(dir / "generation_config.json");
    if (g.contains("bos_token_id") && g.at("bos_token_id").is_number_integer())
      bos_id_ = g.at("bos_token_id").get<int32_t>();
    const nlohmann::json eos = g.value("eos_token_id", nlohmann::json());
    if (eos.is_number_integer()) eos_ids_.push_back(eos.get<int32_t>());
    if (eos.is_array()) {
      for (const nlohmann::json& e : eos) {
        if (e.is_number_integer()) eos_ids_.push_back(e.get<int32_t>());
      }
    }
  }
  if (fs::exists(dir / "tokenizer_config.json")) {
    const nlohmann::json c = read_tokenizer_json(dir / "tokenizer_config.json");
    const std::optional<std::string> bos = config_token(c, "bos_token"), eos = config_token(c, "eos_token");
    if (bos_id_ < 0 && bos && token_to_id(*bos)) bos_id_ = *token_to_id(*bos);
    if (eos_ids_.empty() && eos && token_to_id(*eos)) eos_ids_.push_back(*token_to_id(*eos));
  }
  if (bos_id_ < 0 || eos_ids_.empty()) {
    int32_t bos = -1;
    std::vector<int32_t> eos;
    template_special_ids(post_processor_, &bos, &eos);
    if (bos_id_ < 0) bos_id_ = bos;
    if (eos_ids_.empty()) eos_ids_ = eos;
  }
}

std::optional<std::string> HfTokenizer::token(int32_t id) const {
  if (auto it = added_tokens_.find(id); it != added_tokens_.end()) return it->second;
  if (id >= 0 && static_cast<size_t>(id) < model_tokens_.size())
    return model_tokens_[static_cast<size_t>(id)];
  return std::nullopt;
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  auto it = ids_by_token_.find(std::string(token));
  return it == ids_by_token_.end() ? std::nullopt : std::optional<int32_t>(it->second);
}

bool HfTokenizer::is_special(int32_t id) const {
  const std::optional<std::string> t = token(id);
  return t && special_contents_.contains(*t);
}

std::string HfTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    std::optional<std::string> t = token(id);
    if (!t || (skip_special_tokens && special_contents_.contains(*t))) continue;
    tokens.push_back(std::move(*t));
  }
  return decoder_.decode(std::move(tokens));
}

}  // namespace coat::data
