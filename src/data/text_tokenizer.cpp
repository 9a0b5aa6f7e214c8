// TextTokenizer: one face over the two tokenizer kinds; SentencePiece's control tokens are shown, when
// asked, by decoding the text between them.
#include "coat/data/text_tokenizer.h"

#include <algorithm>

#include "coat/core/error.h"
#include "coat/data/hf_python.h"

namespace coat::data {

namespace fs = std::filesystem;

TextTokenizer TextTokenizer::load(const fs::path& path, Options options) {
  TextTokenizer t;
  t.options_ = std::move(options);
  if (path.extension() == ".json" || fs::is_directory(path)) {
    t.hf_ = std::make_shared<const HfTokenizer>(HfTokenizer::load(path));
    try {
      t.hf_encoder_ = std::make_shared<const HfEncoder>(HfEncoder::load(path));
    } catch (const NotImplemented& e) {
      t.python_encoder_reason_ = e.what();  // a feature the native encoder lacks: Python's library encodes
    }
  } else {
    t.sentencepiece_ = std::make_shared<const Tokenizer>(Tokenizer::load(path));
  }
  return t;
}

std::vector<int32_t> TextTokenizer::encode_prompt(std::string_view text) const {
  if (hf_encoder_) return hf_encoder_->encode(text, /*add_special_tokens=*/true);
  if (hf_) {
    try {
      return hf_python_encode(options_.hf_encode_script, hf_->path(), text, /*add_special_tokens=*/true);
    } catch (const Error& e) {
      throw Error(
          detail::concat(e.what(), " (Python encodes this file because ", python_encoder_reason_, ")"));
    }
  }
  std::vector<int32_t> ids = sentencepiece_->encode(text);
  if (sentencepiece_->bos_id() >= 0) ids.insert(ids.begin(), sentencepiece_->bos_id());
  return ids;
}

std::string TextTokenizer::decode(std::span<const int32_t> ids) const {
  if (hf_) return hf_->decode(ids, !options_.show_special_tokens);
  if (!options_.show_special_tokens) return sentencepiece_->decode(ids);
  const Tokenizer& sp = *sentencepiece_;
  auto is_control = [&](int32_t id) { return id == sp.bos_id() || id == sp.eos_id() || id == sp.pad_id(); };
  std::string out;
  for (auto begin = ids.begin(); begin != ids.end();) {
    auto control = std::find_if(begin, ids.end(), is_control);
    out += sp.decode(std::span<const int32_t>(begin, control));
    if (control == ids.end()) break;
    out += sp.piece(*control);
    begin = control + 1;
  }
  return out;
}

bool TextTokenizer::ends_generation(int32_t id) const {
  if (hf_) return std::find(hf_->eos_ids().begin(), hf_->eos_ids().end(), id) != hf_->eos_ids().end();
  return id == sentencepiece_->eos_id();
}

std::string TextTokenizer::description() const {
  if (!hf_) return "SentencePiece model " + sentencepiece_->path().string();
  if (hf_encoder_) return "tokenizer.json " + hf_->path().string();
  return "tokenizer.json " + hf_->path().string() +
         " (prompts encoded by Python `tokenizers`: " + python_encoder_reason_ + ")";
}

}  // namespace coat::data
