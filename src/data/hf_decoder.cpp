// tokenizer.json decoders: each step transforms the list of token strings as its `tokenizers` counterpart
// does (decoders/*.rs), including the corner cases (a ByteLevel token with a character outside the byte
// alphabet is kept as its UTF-8 bytes; ByteFallback turns an invalid byte run into one U+FFFD per byte).
#include "coat/data/hf_decoder.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "coat/core/error.h"
#include "coat/data/unicode_class.h"

namespace coat::data {

namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

/// The code points of a string (an invalid byte reads as U+FFFD).
std::vector<char32_t> code_points(std::string_view s) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < s.size();) {
    const Utf8Step step = utf8_step(s, i);
    out.push_back(step.length == 0 ? U'\uFFFD' : step.code_point);
    i += step.length == 0 ? step.invalid : step.length;
  }
  return out;
}

std::string from_code_points(const std::vector<char32_t>& chars, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) append_utf8(out, chars[i]);
  return out;
}

/// GPT-2's table: printable Latin-1 bytes spell themselves, the others 256, 257, ... in byte order.
constexpr bool byte_spells_itself(int b) {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

constexpr std::array<char32_t, 256> make_byte_level_chars() {
  std::array<char32_t, 256> chars{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b)
    chars[static_cast<size_t>(b)] = byte_spells_itself(b) ? static_cast<char32_t>(b) : next++;
  return chars;
}
constexpr std::array<char32_t, 256> kByteLevelChars = make_byte_level_chars();
constexpr char32_t kByteLevelCharsEnd = 256 + 68;  // 68 bytes do not spell themselves

constexpr std::array<int16_t, kByteLevelCharsEnd> make_byte_level_bytes() {
  std::array<int16_t, kByteLevelCharsEnd> bytes{};
  for (auto& b : bytes) b = -1;
  for (size_t b = 0; b < 256; ++b) bytes[kByteLevelChars[b]] = static_cast<int16_t>(b);
  return bytes;
}
constexpr std::array<int16_t, kByteLevelCharsEnd> kByteLevelBytes = make_byte_level_bytes();

char32_t single_char(const nlohmann::json& j, const char* key, std::string_view source) {
  const std::vector<char32_t> chars = code_points(j.at(key).get<std::string>());
  if (chars.size() != 1) {
    throw InvalidArgument(detail::concat("[tokenizer.json] ", source, ": decoder ",
                                         j.value("type", std::string()), " key '", key,
                                         "' must be one character, not ", j.at(key).dump()));
  }
  return chars[0];
}

class ByteLevelStep final : public HfDecoderStep {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      std::string mapped;
      bool all = true;
      for (char32_t c : code_points(token)) {
        const int b = byte_level_byte(c);
        if (b < 0) {
          all = false;
          break;
        }
        mapped += static_cast<char>(b);
      }
      bytes += all ? mapped : token;
    }
    return {utf8_lossy(bytes)};
  }
};

class ReplaceStep final : public HfDecoderStep {
 public:
  ReplaceStep(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) {
      if (pattern_.empty()) continue;
      std::string out;
      for (size_t at = 0;;) {
        const size_t hit = token.find(pattern_, at);
        out.append(token, at, hit == std::string::npos ? std::string::npos : hit - at);
        if (hit == std::string::npos) break;
        out += content_;
        at = hit + pattern_.size();
      }
      token = std::move(out);
    }
    return tokens;
  }

 private:
  std::string pattern_, content_;
};

/// "<0xNN>" (Rust's u8::from_str_radix(.., 16) also takes "+N"): the byte, or -1.
int fallback_byte(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (token[3] == '+') return hex(token[4]);
  const int hi = hex(token[3]), lo = hex(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackStep final : public HfDecoderStep {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string run;  // consecutive byte tokens
    auto flush = [&] {
      if (run.empty()) return;
      if (utf8_lossy(run) == run) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(kReplacementChar);
      }
      run.clear();
    };
    for (std::string& token : tokens) {
      const int b = fallback_byte(token);
      if (b >= 0) {
        run += static_cast<char>(b);
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    return out;
  }
};

class FuseStep final : public HfDecoderStep {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    return {all};
  }
};

class StripStep final : public HfDecoderStep {
 public:
  StripStep(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) {
      const std::vector<char32_t> chars = code_points(token);
      size_t begin = 0, end = chars.size();
      while (begin < std::min(start_, chars.size()) && chars[begin] == content_) ++begin;
      while (end > begin && chars.size() - end < stop_ && chars[end - 1] == content_) --end;
      token = from_code_points(chars, begin, end);
    }
    return tokens;
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class MetaspaceStep final : public HfDecoderStep {
 public:
  MetaspaceStep(char32_t replacement, bool prepends) : replacement_(replacement), prepends_(prepends) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for (char32_t c : code_points(tokens[i])) {
        if (c != replacement_) {
          append_utf8(out, c);
        } else if (i != 0 || !prepends_) {  // the first token's replacements are the prepended space
          out += ' ';
        }
      }
      tokens[i] = std::move(out);
    }
    return tokens;
  }

 private:
  char32_t replacement_;
  bool prepends_;
};

class SequenceStep final : public HfDecoderStep {
 public:
  explicit SequenceStep(std::vector<std::shared_ptr<const HfDecoderStep>> steps) : steps_(std::move(steps)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& step : steps_) tokens = step->decode_chain(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::shared_ptr<const HfDecoderStep>> steps_;
};

std::shared_ptr<const HfDecoderStep> make_step(const nlohmann::json& j, std::string_view source) {
  const std::string type = j.value("type", std::string());
  if (type == "ByteLevel") return std::make_shared<ByteLevelStep>();
  if (type == "ByteFallback") return std::make_shared<ByteFallbackStep>();
  if (type == "Fuse") return std::make_shared<FuseStep>();
  if (type == "Strip") {
    return std::make_shared<StripStep>(single_char(j, "content", source), j.at("start").get<size_t>(),
                                       j.at("stop").get<size_t>());
  }
  if (type == "Replace") {
    const nlohmann::json& pattern = j.at("pattern");
    if (!pattern.contains("String")) {
      throw NotImplemented(detail::concat("[tokenizer.json] ", source, ": a Replace decoder with pattern ",
                                          pattern.dump(), " (only String patterns are read)"));
    }
    return std::make_shared<ReplaceStep>(pattern.at("String").get<std::string>(),
                                         j.at("content").get<std::string>());
  }
  if (type == "Metaspace") {
    // prepend_scheme "always" | "first" | "never"; files before it say add_prefix_space.
    const bool prepends = j.contains("prepend_scheme") ? j.at("prepend_scheme").get<std::string>() != "never"
                                                       : j.value("add_prefix_space", true);
    return std::make_shared<MetaspaceStep>(single_char(j, "replacement", source), prepends);
  }
  if (type == "Sequence") {
    std::vector<std::shared_ptr<const HfDecoderStep>> steps;
    for (const nlohmann::json& d : j.at("decoders")) steps.push_back(make_step(d, source));
    return std::make_shared<SequenceStep>(std::move(steps));
  }
  throw NotImplemented(
      detail::concat("[tokenizer.json] ", source, ": decoder type '", type,
                     "' (read: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)"));
}

}  // namespace

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const Utf8Step step = utf8_step(bytes, i);
    if (step.length == 0) {
      out += kReplacementChar;
      i += step.invalid;
    } else {
      out.append(bytes.substr(i, step.length));
      i += step.length;
    }
  }
  return out;
}

int byte_level_byte(char32_t c) {
  return c < kByteLevelCharsEnd ? kByteLevelBytes[c] : -1;
}

char32_t byte_level_char(unsigned char byte) {
  return kByteLevelChars[byte];
}

HfDecoder HfDecoder::from_json(const nlohmann::json& decoder, std::string_view source) {
  HfDecoder out;
  if (decoder.is_null()) return out;
  try {
    out.step_ = make_step(decoder, source);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(
        detail::concat("[tokenizer.json] ", source, ": malformed decoder ", decoder.dump(), ": ", e.what()));
  }
  return out;
}

std::string HfDecoder::decode(std::vector<std::string> tokens) const {
  std::string out;
  if (!step_) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  for (const std::string& s : step_->decode_chain(std::move(tokens))) out += s;
  return out;
}

}  // namespace coat::data
