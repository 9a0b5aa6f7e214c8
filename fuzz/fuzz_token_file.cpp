// Token files: our header format, and headerless u16/u32 arrays. The first input byte picks the reader (and
// a vocabulary limit); the rest is the file.
#include "coat/data/token_file.h"
#include "fuzz_common.h"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const auto path = coat::fuzz::write_scratch("tokens.bin", data + 1, size - 1);
  coat::fuzz::expect_only_library_errors([&] {
    const uint32_t limit = mode >> 2;  // 0: the file's own vocabulary
    coat::data::TokenFile f =
        (mode & 3) == 0   ? coat::data::TokenFile::open(path)
        : (mode & 3) == 1 ? coat::data::TokenFile::open_raw(path, coat::data::TokenWidth::U16, limit)
                          : coat::data::TokenFile::open_raw(path, coat::data::TokenWidth::U32, limit, true);
    if (f.size() == 0) return;
    (void)f[f.size() - 1];
    std::vector<int32_t> window(std::min<uint64_t>(f.size(), 17));
    f.read(f.size() - window.size(), window, limit);
    if (f.vocab_size() > 0 || limit > 0) f.validate(limit);
  });
  return 0;
}
