// BPE encoding of one pre-token, following tokenizers' BPE::merge_word and Word::merge_all.
#include "coat/data/hf_bpe.h"

#include <cstdio>
#include <queue>

#include "coat/core/error.h"
#include "coat/data/hf_pretokenizer.h"

namespace coat::data {

namespace {

std::string merge_side(const nlohmann::json& merge, size_t index, int side, std::string_view source) {
  if (merge.is_array() && merge.size() == 2 && merge[side].is_string()) return merge[side].get<std::string>();
  if (merge.is_string()) {
    const std::string s = merge.get<std::string>();
    const size_t space = s.find(' ');
    if (space != std::string::npos) return side == 0 ? s.substr(0, space) : s.substr(space + 1);
  }
  hf_encoder_malformed(source, detail::concat("model.merges[", index, "]"),
                       merge.dump() + " is neither \"a b\" nor [a, b]");
}

/// Bytes of the UTF-8 character that starts with `lead`.
size_t utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

}  // namespace

HfBpe HfBpe::from_json(const nlohmann::json& model, std::string_view source) {
  HfBpe bpe;
  bpe.source_ = source;
  if (!model.is_object()) hf_encoder_malformed(source, "model", "is not an object");
  const std::string type = model.value("type", std::string());
  if (type != "BPE") hf_encoder_unsupported(source, "model.type", "'" + type + "' (only BPE)");
  const nlohmann::json& dropout = model.value("dropout", nlohmann::json());
  if (!dropout.is_null() && dropout.get<double>() != 0.0)
    hf_encoder_unsupported(source, "model.dropout", dropout.dump() + " (encoding would be random)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const nlohmann::json& v = model.value(key, nlohmann::json());
    if (!v.is_null() && !(v.is_string() && v.get<std::string>().empty()))
      hf_encoder_unsupported(source, std::string("model.") + key, v.dump());
  }
  if (!model.contains("vocab") || !model.at("vocab").is_object())
    hf_encoder_malformed(source, "model.vocab", "is missing or not an object of token: id");
  for (const auto& [token, id] : model.at("vocab").items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      hf_encoder_malformed(source, "model.vocab['" + token + "']", "is not an id: " + id.dump());
    bpe.vocab_[token] = id.get<int32_t>();
    bpe.ids_.insert(id.get<int32_t>());
  }
  const nlohmann::json& merges = model.value("merges", nlohmann::json::array());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string a = merge_side(merges[i], i, 0, source), b = merge_side(merges[i], i, 1, source);
    const auto id = [&](const std::string& token) {
      auto it = bpe.vocab_.find(token);
      if (it == bpe.vocab_.end())
        hf_encoder_malformed(source, detail::concat("model.merges[", i, "]"),
                             "'" + token + "' is not in the vocab");
      return it->second;
    };
    // A repeated pair takes its last rank, as the library's map does.
    bpe.merges_[pair_key(id(a), id(b))] = {static_cast<uint32_t>(i), id(a + b)};
  }
  const nlohmann::json& unk = model.value("unk_token", nlohmann::json());
  if (unk.is_string()) bpe.unk_token_ = unk.get<std::string>();
  bpe.fuse_unk_ = model.value("fuse_unk", false);
  bpe.byte_fallback_ = model.value("byte_fallback", false);
  bpe.ignore_merges_ = model.value("ignore_merges", false);
  return bpe;
}

std::optional<int32_t> HfBpe::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? std::nullopt : std::optional<int32_t>(it->second);
}

std::vector<int32_t> HfBpe::tokenize(std::string_view text) const {
  if (text.empty()) return {};
  if (ignore_merges_) {
    if (std::optional<int32_t> id = token_to_id(text)) return {*id};
  }
  std::vector<int32_t> symbols;
  int32_t pending_unk = -1;  // the unk id of an unknown run waiting to be fused or flushed
  const auto unk_id = [&]() {
    std::optional<int32_t> id = token_to_id(*unk_token_);
    if (!id) {
      throw InvalidArgument(detail::concat("[hf_encoder] ", source_, ": model.unk_token '", *unk_token_,
                                           "' is not in the vocab"));
    }
    return *id;
  };
  for (size_t i = 0; i < text.size();) {
    const size_t len = std::min(utf8_length(static_cast<unsigned char>(text[i])), text.size() - i);
    const std::string_view ch = text.substr(i, len);
    i += len;
    if (std::optional<int32_t> id = token_to_id(ch)) {
      if (pending_unk >= 0) symbols.push_back(pending_unk);
      pending_unk = -1;
      symbols.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      for (char b : ch) {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "<0x%02X>", static_cast<unsigned char>(b));
        if (std::optional<int32_t> id = token_to_id(hex)) bytes.push_back(*id);
      }
      if (bytes.size() == ch.size()) {  // the library adds them without flushing a pending unk
        symbols.insert(symbols.end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (!unk_token_) continue;  // no unk token: the character is dropped, as the library does
    if (pending_unk >= 0 && !fuse_unk_) symbols.push_back(pending_unk);
    if (pending_unk < 0 || !fuse_unk_) pending_unk = unk_id();
  }
  if (pending_unk >= 0) symbols.push_back(pending_unk);
  return merge_all(std::move(symbols));
}

std::vector<int32_t> HfBpe::merge_all(std::vector<int32_t> ids) const {
  struct Symbol {
    int32_t id;
    int64_t prev, next;
    bool removed;
  };
  std::vector<Symbol> symbols(ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    symbols[i] = {ids[i], static_cast<int64_t>(i) - 1, i + 1 < ids.size() ? static_cast<int64_t>(i) + 1 : -1,
                  false};
  struct Candidate {
    uint32_t rank;
    size_t pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // the queue's top: lowest rank, then leftmost
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  const auto push_pair = [&](size_t left, size_t right) {
    auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) push_pair(i, i + 1);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.removed || left.next < 0) continue;
    const auto right_pos = static_cast<size_t>(left.next);
    // A stale entry: the pair at this position changed since it was queued.
    auto it = merges_.find(pair_key(left.id, symbols[right_pos].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    left.next = symbols[right_pos].next;
    symbols[right_pos].removed = true;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = static_cast<int64_t>(top.pos);
    if (left.prev >= 0) push_pair(static_cast<size_t>(left.prev), top.pos);
    if (left.next >= 0) push_pair(top.pos, static_cast<size_t>(left.next));
  }
  std::vector<int32_t> out;
  for (const Symbol& s : symbols) {
    if (!s.removed) out.push_back(s.id);
  }
  return out;
}

}  // namespace coat::data
