// tokenizer.json encoding: the file's parts read (refusing by key what the native encoder lacks), added
// tokens split out before and after normalization as tokenizers' AddedVocabulary does, then the
// pre-tokenizer, the BPE model and the post-processor's template.
#include "coat/data/hf_encoder.h"

#include <algorithm>

#include "coat/core/error.h"
#include "coat/data/hf_tokenizer.h"
#include "coat/data/unicode_class.h"

namespace coat::data {

namespace fs = std::filesystem;

HfEncoder HfEncoder::load(const fs::path& path) {
  HfEncoder e;
  e.path_ = fs::is_directory(path) ? path / "tokenizer.json" : path;
  const nlohmann::json j = read_tokenizer_json(e.path_);
  const std::string source = e.path_.string();
  if (!j.is_object() || !j.contains("model"))
    hf_encoder_malformed(source, "model", "is missing (is it a tokenizer.json?)");
  for (const char* key : {"truncation", "padding"}) {
    if (j.contains(key) && !j.at(key).is_null()) hf_encoder_unsupported(source, key, j.at(key).dump());
  }
  e.normalizer_ = HfNormalizer::from_json(j.value("normalizer", nlohmann::json()), source);
  e.pre_tokenizer_ = HfPreTokenizer::from_json(j.value("pre_tokenizer", nlohmann::json()), source);
  e.model_ = HfBpe::from_json(j.at("model"), source);
  e.read_added_tokens(j.value("added_tokens", nlohmann::json::array()));
  e.read_post_processor(j.value("post_processor", nlohmann::json()), "post_processor");
  return e;
}

void HfEncoder::read_added_tokens(const nlohmann::json& added_tokens) {
  const std::string source = path_.string();
  struct Read {
    bool special, normalized;
    AddedToken token;
  };
  std::vector<Read> tokens;
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const nlohmann::json& t = added_tokens[i];
    const std::string key = detail::concat("added_tokens[", i, "]");
    if (!t.is_object() || !t.contains("content") || !t.at("content").is_string() || !t.contains("id") ||
        !t.at("id").is_number_integer()) {
      hf_encoder_malformed(source, key, "has no string content and integer id: " + t.dump());
    }
    if (t.value("single_word", false)) hf_encoder_unsupported(source, key + ".single_word", "true");
    const std::string content = t.at("content").get<std::string>();
    if (content.empty()) continue;  // matches nothing
    const bool special = t.value("special", false), normalized = t.value("normalized", !special);
    // The library gives a content that the model knows the model's id, another one a new id: a file whose
    // id is a model token's would encode differently there.
    const auto file_id = t.at("id").get<int32_t>();
    const std::optional<int32_t> model_id = model_.token_to_id(content);
    if (!model_id && model_.has_id(file_id)) {
      hf_encoder_malformed(source, key + ".id",
                           detail::concat(file_id, " of '", content,
                                          "' is a model token's id (the library would "
                                          "give the added token another one)"));
    }
    const int32_t id = model_id.value_or(file_id);
    tokens.push_back({special,
                      normalized,
                      {normalized ? normalizer_.normalize(content) : content, id, t.value("lstrip", false),
                       t.value("rstrip", false)}});
  }
  // The library's pattern order: special tokens, then the others, each in file order; among matches at
  // one position the longest wins, then the earliest pattern.
  std::stable_sort(tokens.begin(), tokens.end(),
                   [](const Read& a, const Read& b) { return a.special > b.special; });
  std::stable_sort(tokens.begin(), tokens.end(), [](const Read& a, const Read& b) {
    return a.token.pattern.size() > b.token.pattern.size();
  });
  for (const Read& r : tokens) (r.normalized ? normalized_added_ : raw_added_).push_back(r.token);
}

void HfEncoder::read_post_processor(const nlohmann::json& processor, const std::string& key) {
  const std::string source = path_.string();
  if (processor.is_null()) return;
  const std::string type = processor.is_object() ? processor.value("type", std::string()) : "";
  if (type == "Sequence") {
    const nlohmann::json& list = processor.value("processors", nlohmann::json::array());
    for (size_t i = 0; i < list.size(); ++i)
      read_post_processor(list[i], detail::concat(key, ".processors[", i, "]"));
    return;
  }
  if (type == "ByteLevel") return;  // it trims offsets; the ids stay
  if (type != "TemplateProcessing") hf_encoder_unsupported(source, key + ".type", "'" + type + "'");
  const nlohmann::json& specials = processor.value("special_tokens", nlohmann::json::object());
  std::vector<int32_t> before, after;
  bool sequence_seen = false;
  const nlohmann::json& single = processor.value("single", nlohmann::json::array());
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string piece_key = detail::concat(key, ".single[", i, "]");
    if (single[i].contains("Sequence")) {
      if (sequence_seen || single[i].at("Sequence").value("id", std::string()) != "A")
        hf_encoder_unsupported(source, piece_key, single[i].dump() + " (one $A in the single template)");
      sequence_seen = true;
      continue;
    }
    const std::string name =
        single[i].contains("SpecialToken") ? single[i].at("SpecialToken").value("id", std::string()) : "";
    if (!specials.contains(name) || !specials.at(name).contains("ids"))
      hf_encoder_malformed(source, piece_key,
                           single[i].dump() + " names no entry of special_tokens with ids");
    for (const nlohmann::json& id : specials.at(name).at("ids"))
      (sequence_seen ? after : before).push_back(id.get<int32_t>());
  }
  if (!sequence_seen) hf_encoder_malformed(source, key + ".single", "has no $A sequence");
  // A later processor wraps what the earlier ones made.
  prefix_ids_.insert(prefix_ids_.begin(), before.begin(), before.end());
  suffix_ids_.insert(suffix_ids_.end(), after.begin(), after.end());
}

std::vector<HfPiece> HfEncoder::split_added(HfPiece piece, const std::vector<AddedToken>& tokens) {
  std::vector<HfPiece> out;
  const std::string& s = piece.text;
  const auto emit = [&](size_t begin, size_t end, int32_t id) {
    if (end > begin) out.push_back({s.substr(begin, end - begin), id, piece.at_text_start && begin == 0});
  };
  // White space next to a match, as Rust's char::is_whitespace (only decoded where a token strips).
  const auto space_before = [&](size_t end) {
    size_t begin = end;
    while (begin > 0) {
      size_t lead = begin - 1;
      while (lead > 0 && (static_cast<unsigned char>(s[lead]) & 0xC0) == 0x80) --lead;
      if (!is_unicode_white_space(decode_utf8(s.substr(lead, begin - lead), "text").code_points.at(0))) break;
      begin = lead;
    }
    return begin;
  };
  const auto space_after = [&](size_t begin) {
    const Utf8Text rest = decode_utf8(std::string_view(s).substr(begin), "text");
    size_t k = 0;
    while (k < rest.code_points.size() && is_unicode_white_space(rest.code_points[k])) ++k;
    return begin + rest.offsets[k];
  };
  size_t done = 0;  // the end of the last match
  for (size_t i = 0; i < s.size();) {
    const auto match = std::find_if(tokens.begin(), tokens.end(), [&](const AddedToken& t) {
      return t.pattern[0] == s[i] && s.compare(i, t.pattern.size(), t.pattern) == 0;
    });
    if (match == tokens.end()) {
      ++i;
      continue;
    }
    const size_t start = match->lstrip ? std::max(space_before(i), done) : i;
    const size_t stop = match->rstrip ? space_after(i + match->pattern.size()) : i + match->pattern.size();
    emit(done, start, -1);
    out.push_back({s.substr(start, stop - start), match->id, piece.at_text_start && start == 0});
    done = i = stop;
  }
  emit(done, s.size(), -1);
  return out;
}

std::vector<int32_t> HfEncoder::encode(std::string_view text, bool add_special_tokens) const {
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos) {
    throw InvalidArgument(detail::concat("[hf_encoder] the text to encode is not valid UTF-8 at byte offset ",
                                         bad, " (the tokenizers library takes only valid UTF-8 strings)"));
  }
  std::vector<HfPiece> pieces;
  for (HfPiece& raw : split_added({std::string(text), -1, true}, raw_added_)) {
    if (raw.added_id >= 0) {
      pieces.push_back(std::move(raw));
      continue;
    }
    raw.text = normalizer_.normalize(std::move(raw.text));
    for (HfPiece& p : split_added(std::move(raw), normalized_added_)) pieces.push_back(std::move(p));
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = prefix_ids_;
  for (const HfPiece& piece : pre_tokenizer_.pre_tokenize(std::move(pieces))) {
    if (piece.added_id >= 0) {
      ids.push_back(piece.added_id);
      continue;
    }
    const std::vector<int32_t> piece_ids = model_.tokenize(piece.text);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

}  // namespace coat::data
