// Hugging Face safetensors files: the header length, the JSON header (dtypes, shapes, data offsets, metadata)
// and reading every tensor.
#include "coat/io/safetensors.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = coat::fuzz::write_scratch("model.safetensors", data, size);
  coat::fuzz::expect_only_library_errors([&] {
    const coat::io::SafetensorsReader reader = coat::io::SafetensorsReader::open(path);
    (void)reader.metadata();
    for (const coat::io::SafetensorsEntry& e : reader.entries()) {
      if (e.bytes() > (1u << 20)) continue;
      coat::fuzz::expect_only_library_errors([&] { (void)reader.read(e.name); });
    }
  });
  return 0;
}
