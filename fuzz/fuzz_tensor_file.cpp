// Native tensor files (checkpoint rank files): the header, the JSON index, every entry's bounds and dtype,
// and reading every tensor (whole, and a slice) with its checksum.
#include "coat/io/tensor_file.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = coat::fuzz::write_scratch("rank_00000.bin", data, size);
  coat::fuzz::expect_only_library_errors([&] {
    const coat::io::TensorFileReader reader = coat::io::TensorFileReader::open(path);
    for (const coat::io::TensorFileEntry& e : reader.entries()) {
      if (e.bytes > (1u << 20))
        continue;  // the reader maps the file; a copy of a huge tensor is not the point
      coat::fuzz::expect_only_library_errors([&] { (void)reader.read(e.name); });
      coat::fuzz::expect_only_library_errors([&] {
        if (e.numel() > 1) (void)reader.read_slice(e.name, 1, e.numel() - 1);
      });
    }
  });
  return 0;
}
