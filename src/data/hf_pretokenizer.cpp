// Normalizers and pre-tokenizers of tokenizer.json for the native encoder; the two pre-tokenizer regular
// expressions as scanners that follow the backtracking regex's choices (first alternative that matches at
// the leftmost position, greedy quantifiers given back only as far as the rest needs).
#include "coat/data/hf_pretokenizer.h"

#include "coat/core/error.h"
#include "coat/data/hf_decoder.h"
#include "coat/data/unicode_class.h"

namespace coat::data {

void hf_encoder_unsupported(std::string_view source, const std::string& key, const std::string& what) {
  throw NotImplemented(detail::concat("[hf_encoder] ", source, ": ", key, " ", what,
                                      " is not supported by the native encoder"));
}

void hf_encoder_malformed(std::string_view source, const std::string& key, const std::string& what) {
  throw InvalidArgument(detail::concat("[hf_encoder] ", source, ": ", key, " ", what));
}

namespace {

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool is_letter(char32_t c) {
  return is_unicode_letter(c);
}
bool is_number(char32_t c) {
  return is_unicode_number(c);
}
bool is_space(char32_t c) {
  return is_unicode_white_space(c);
}
bool is_newline(char32_t c) {
  return c == '\r' || c == '\n';
}
/// [^\s\p{L}\p{N}]
bool is_other(char32_t c) {
  return unicode_class(c) == 0;
}

template <typename Pred>
size_t run_end(std::span<const char32_t> s, size_t i, Pred pred) {
  while (i < s.size() && pred(s[i])) ++i;
  return i;
}

/// 's|'t|'re|'ve|'m|'ll|'d at i: the match length or 0. Case-insensitive as Oniguruma's (?i:) folds:
/// ASCII letters, and U+017F (long s) folds to s.
size_t contraction(std::span<const char32_t> s, size_t i, bool ignore_case) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  const auto fold = [&](char32_t c) -> char32_t {
    if (!ignore_case) return c;
    if (c >= 'A' && c <= 'Z') return c - 'A' + 'a';
    return c == 0x17F ? U's' : c;
  };
  const char32_t a = fold(s[i + 1]);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  const char32_t b = i + 2 < s.size() ? fold(s[i + 2]) : 0;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

/// \s+(?!\S)|\s+ at the white space at i: the run, less its last character when a non-space follows it
/// (that character then leads the next word).
size_t white_space_run(std::span<const char32_t> s, size_t i) {
  const size_t end = run_end(s, i, is_space);
  return (end < s.size() && end - i >= 2) ? end - 1 - i : end - i;
}

/// `optional` once, when the class run follows it, then one or more of the class: `c?X+`.
template <typename Optional, typename Class>
size_t optional_then_run(std::span<const char32_t> s, size_t i, Optional optional, Class cls) {
  size_t j = i;
  if (optional(s[i]) && i + 1 < s.size() && cls(s[i + 1])) j = i + 1;
  if (!cls(s[j])) return 0;
  return run_end(s, j, cls) - i;
}

size_t match_gpt2(std::span<const char32_t> s, size_t i) {
  const auto space = [](char32_t c) { return c == ' '; };
  if (size_t n = contraction(s, i, /*ignore_case=*/false)) return n;
  if (size_t n = optional_then_run(s, i, space, is_letter)) return n;
  if (size_t n = optional_then_run(s, i, space, is_number)) return n;
  if (size_t n = optional_then_run(s, i, space, is_other)) return n;
  return is_space(s[i]) ? white_space_run(s, i) : 0;
}

size_t match_llama3(std::span<const char32_t> s, size_t i) {
  if (size_t n = contraction(s, i, /*ignore_case=*/true)) return n;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  const auto lead = [](char32_t c) { return !is_newline(c) && !is_letter(c) && !is_number(c); };
  if (size_t n = optional_then_run(s, i, lead, is_letter)) return n;
  // \p{N}{1,3}
  if (is_number(s[i])) {
    size_t j = i;
    while (j < s.size() && j - i < 3 && is_number(s[j])) ++j;
    return j - i;
  }
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  const auto space = [](char32_t c) { return c == ' '; };
  if (size_t n = optional_then_run(s, i, space, is_other)) return run_end(s, i + n, is_newline) - i;
  if (!is_space(s[i])) return 0;
  // \s*[\r\n]+: the white space up to its last line break (the greedy \s* gives back to that point).
  const size_t end = run_end(s, i, is_space);
  for (size_t p = end; p > i; --p) {
    if (is_newline(s[p - 1])) return p - i;
  }
  return white_space_run(s, i);
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  std::string out;
  size_t begin = 0;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, begin)) {
    out.append(text, begin, at - begin);
    out += to;
    begin = at + from.size();
  }
  out.append(text, begin);
  return out;
}

std::string type_of(const nlohmann::json& j, const std::string& key, std::string_view source) {
  if (!j.is_object() || !j.contains("type") || !j.at("type").is_string())
    hf_encoder_malformed(source, key, detail::concat("has no \"type\": ", j.dump()));
  return j.at("type").get<std::string>();
}

std::string string_field(const nlohmann::json& j, const char* name, const std::string& key,
                         std::string_view source) {
  if (!j.contains(name) || !j.at(name).is_string())
    hf_encoder_malformed(source, key + "." + name, "is missing or not a string");
  return j.at(name).get<std::string>();
}

}  // namespace

std::string_view hf_split_pattern_regex(HfSplitPattern pattern) {
  return pattern == HfSplitPattern::kGpt2 ? kGpt2Regex : kLlama3Regex;
}

std::vector<std::pair<size_t, size_t>> hf_split_isolated(std::span<const char32_t> text,
                                                         HfSplitPattern pattern) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t gap = 0;  // start of text no match has covered
  for (size_t i = 0; i < text.size();) {
    const size_t n = pattern == HfSplitPattern::kGpt2 ? match_gpt2(text, i) : match_llama3(text, i);
    if (n == 0) {
      ++i;
      continue;
    }
    if (gap < i) out.emplace_back(gap, i);
    out.emplace_back(i, i + n);
    i += n;
    gap = i;
  }
  if (gap < text.size()) out.emplace_back(gap, text.size());
  return out;
}

// ---- normalizer ----

HfNormalizer HfNormalizer::from_json(const nlohmann::json& normalizer, std::string_view source) {
  HfNormalizer n;
  const auto add = [&](const auto& self, const nlohmann::json& j, const std::string& key) -> void {
    if (j.is_null()) return;
    const std::string type = type_of(j, key, source);
    if (type == "Sequence") {
      if (!j.contains("normalizers") || !j.at("normalizers").is_array())
        hf_encoder_malformed(source, key + ".normalizers", "is missing or not a list");
      for (size_t i = 0; i < j.at("normalizers").size(); ++i)
        self(self, j.at("normalizers")[i], detail::concat(key, ".normalizers[", i, "]"));
    } else if (type == "Prepend") {
      n.steps_.push_back({string_field(j, "prepend", key, source), "", ""});
    } else if (type == "Replace") {
      const nlohmann::json& pattern = j.value("pattern", nlohmann::json());
      if (!pattern.is_object() || !pattern.contains("String") || !pattern.at("String").is_string()) {
        hf_encoder_unsupported(source, key + ".pattern",
                               detail::concat(pattern.dump(), " (only a {\"String\": ...} pattern)"));
      }
      n.steps_.push_back(
          {"", pattern.at("String").get<std::string>(), string_field(j, "content", key, source)});
    } else {
      hf_encoder_unsupported(source, key + ".type", "'" + type + "'");
    }
  };
  add(add, normalizer, "normalizer");
  return n;
}

std::string HfNormalizer::normalize(std::string text) const {
  for (const Step& step : steps_) {
    if (!step.prepend.empty()) {
      if (!text.empty()) text = step.prepend + text;
    } else {
      text = replace_all(std::move(text), step.replace_from, step.replace_to);
    }
  }
  return text;
}

// ---- pre-tokenizer ----

void HfPreTokenizer::add_steps(const nlohmann::json& j, const std::string& key, std::string_view source,
                               std::vector<Step>* steps) {
  if (j.is_null()) return;
  const std::string type = type_of(j, key, source);
  Step step;
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j.at("pretokenizers").is_array())
      hf_encoder_malformed(source, key + ".pretokenizers", "is missing or not a list");
    for (size_t i = 0; i < j.at("pretokenizers").size(); ++i)
      add_steps(j.at("pretokenizers")[i], detail::concat(key, ".pretokenizers[", i, "]"), source, steps);
    return;
  }
  if (type == "Split") {
    const nlohmann::json& pattern = j.value("pattern", nlohmann::json());
    const std::string regex =
        pattern.is_object() && pattern.contains("Regex") && pattern.at("Regex").is_string()
            ? pattern.at("Regex").get<std::string>()
            : "";
    if (regex == kLlama3Regex) {
      step.pattern = HfSplitPattern::kLlama3;
    } else if (regex == kGpt2Regex) {
      step.pattern = HfSplitPattern::kGpt2;
    } else {
      hf_encoder_unsupported(source, key + ".pattern",
                             pattern.dump() + " (only the Llama-3 and GPT-2 regular expressions)");
    }
    if (j.value("behavior", std::string()) != "Isolated")
      hf_encoder_unsupported(source, key + ".behavior", j.value("behavior", nlohmann::json()).dump());
    if (j.value("invert", false)) hf_encoder_unsupported(source, key + ".invert", "true");
  } else if (type == "ByteLevel") {
    step.kind = Step::Kind::kByteLevel;
    step.pattern = HfSplitPattern::kGpt2;
    step.use_regex = j.value("use_regex", true);
    step.add_prefix_space = j.value("add_prefix_space", true);
  } else if (type == "Metaspace") {
    step.kind = Step::Kind::kMetaspace;
    step.replacement = string_field(j, "replacement", key, source);
    step.split = j.value("split", true);
    const std::string scheme = j.value("prepend_scheme", std::string("always"));
    if (j.contains("add_prefix_space") && !j.at("add_prefix_space").get<bool>()) {
      step.prepend = Step::Prepend::kNever;
    } else if (scheme == "always" || scheme == "first" || scheme == "never") {
      step.prepend = scheme == "always"  ? Step::Prepend::kAlways
                     : scheme == "first" ? Step::Prepend::kFirst
                                         : Step::Prepend::kNever;
    } else {
      hf_encoder_malformed(source, key + ".prepend_scheme", "'" + scheme + "' is not always, first or never");
    }
  } else {
    hf_encoder_unsupported(source, key + ".type", "'" + type + "'");
  }
  steps->push_back(std::move(step));
}

HfPreTokenizer HfPreTokenizer::from_json(const nlohmann::json& pre_tokenizer, std::string_view source) {
  HfPreTokenizer p;
  add_steps(pre_tokenizer, "pre_tokenizer", source, &p.steps_);
  return p;
}

std::vector<HfPiece> HfPreTokenizer::run(const Step& step, HfPiece piece) {
  std::vector<HfPiece> out;
  const auto emit = [&](std::string text) {
    if (!text.empty()) out.push_back({std::move(text), -1, piece.at_text_start && out.empty()});
  };
  if (step.kind == Step::Kind::kMetaspace) {
    std::string text = replace_all(std::move(piece.text), " ", step.replacement);
    const bool starts = text.starts_with(step.replacement);
    if (!starts && (step.prepend == Step::Prepend::kAlways ||
                    (step.prepend == Step::Prepend::kFirst && piece.at_text_start))) {
      text = step.replacement + text;
    }
    if (!step.split) {
      emit(std::move(text));
      return out;
    }
    // MergedWithNext: every replacement begins a piece ("a▁▁b": "a", "▁", "▁b").
    size_t begin = 0;
    for (size_t at = text.find(step.replacement); at != std::string::npos;
         at = text.find(step.replacement, at + step.replacement.size())) {
      if (at > begin) emit(text.substr(begin, at - begin));
      begin = at;
    }
    emit(text.substr(begin));
    return out;
  }
  if (step.kind == Step::Kind::kByteLevel && step.add_prefix_space && !piece.text.starts_with(' '))
    piece.text = std::string(1, ' ').append(piece.text);
  std::vector<std::string> parts;
  if (step.kind == Step::Kind::kSplit || step.use_regex) {
    const Utf8Text text = decode_utf8(piece.text, "a pre-token");
    for (const auto& [b, e] : hf_split_isolated(text.code_points, step.pattern))
      parts.push_back(piece.text.substr(text.offsets[b], text.offsets[e] - text.offsets[b]));
  } else {
    parts.push_back(std::move(piece.text));
  }
  for (std::string& part : parts) {
    if (step.kind != Step::Kind::kByteLevel) {
      emit(std::move(part));
      continue;
    }
    std::string mapped;
    for (char byte : part) append_utf8(mapped, byte_level_char(static_cast<unsigned char>(byte)));
    emit(std::move(mapped));
  }
  return out;
}

std::vector<HfPiece> HfPreTokenizer::pre_tokenize(std::vector<HfPiece> pieces) const {
  for (const Step& step : steps_) {
    std::vector<HfPiece> next;
    for (HfPiece& piece : pieces) {
      if (piece.added_id >= 0) {
        next.push_back(std::move(piece));
        continue;
      }
      for (HfPiece& part : run(step, std::move(piece))) next.push_back(std::move(part));
    }
    pieces = std::move(next);
  }
  std::erase_if(pieces, [](const HfPiece& p) { return p.added_id < 0 && p.text.empty(); });
  return pieces;
}

}  // namespace coat::data
