// Hugging Face tokenizer.json encoding (data::HfEncoder, with HfTokenizer decoding its ids), as coat-generate
// and the text tokenizer use it. The first byte picks what the rest is:
//   even: text (any bytes, invalid UTF-8 included), encoded with every fixture tokenizer of
//         tests/data/fixtures/hf_encoder (byte-level BPE with the Llama-3 and GPT-2 splits, SentencePiece-style
//         BPE with byte fallback, Metaspace) with and without special tokens, the ids then decoded;
//   odd:  a tokenizer.json, loaded by the encoder and the decoder and used on a fixed text.
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "coat/data/hf_encoder.h"
#include "coat/data/hf_tokenizer.h"
#include "fuzz_common.h"

namespace {

struct Fixture {
  coat::data::HfEncoder encoder;
  coat::data::HfTokenizer decoder;
};

const std::vector<Fixture>& fixtures() {
  static const std::vector<Fixture> loaded = [] {
    std::vector<Fixture> out;
    const std::filesystem::path root = std::filesystem::path(COAT_SOURCE_DIR) / "tests/data/fixtures/hf_encoder";
    for (const char* name : {"llama3", "gpt2", "gpt2_prefix_space", "llama2", "llama2_unk", "llama2_metaspace",
                             "llama2_metaspace_split"}) {
      const std::filesystem::path file = root / name / "tokenizer.json";
      out.push_back({coat::data::HfEncoder::load(file), coat::data::HfTokenizer::load(file)});
    }
    return out;
  }();
  return loaded;
}

void use(const coat::data::HfEncoder& encoder, const coat::data::HfTokenizer& decoder, std::string_view text) {
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = encoder.encode(text, special);
    (void)decoder.decode(ids, /*skip_special_tokens=*/!special);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    for (const Fixture& f : fixtures()) coat::fuzz::expect_only_library_errors([&] { use(f.encoder, f.decoder, rest); });
    return 0;
  }
  const std::filesystem::path path = coat::fuzz::write_scratch("tokenizer.json", data + 1, size - 1);
  coat::fuzz::expect_only_library_errors([&] {
    const coat::data::HfEncoder encoder = coat::data::HfEncoder::load(path);
    const coat::data::HfTokenizer decoder = coat::data::HfTokenizer::load(path);
    use(encoder, decoder, "Hello, world! It's 2026: naïve 東京 🙂\n\t  tabs  and 12345 digits <|end|>");
  });
  return 0;
}
