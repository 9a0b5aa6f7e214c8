// Native tensor files (checkpoint rank files): the header, the JSON index, every entry's bounds and dtype,
// and reading every tensor (whole, and a slice) with its checksum; on a second reader, the parallel paths a
// resume takes (every checksum by pieces, then one batch of slice reads). Those run on the calling thread (one
// I/O thread: the same code without the pool's threads) for every input, and on two threads for one input in
// 16: starting threads for each input made the run 17x slower (281 inputs/s against 4,900).
#include "coat/core/tensor.h"
#include "coat/io/tensor_file.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "fuzz_common.h"

namespace {

constexpr uint64_t kMaxCopied = 1u << 20;  // the reader maps the file; a copy of a huge tensor is not the point

void read_one_by_one(const std::filesystem::path& path) {
  const coat::io::TensorFileReader reader = coat::io::TensorFileReader::open(path);
  for (const coat::io::TensorFileEntry& e : reader.entries()) {
    if (e.bytes > kMaxCopied) continue;
    coat::fuzz::expect_only_library_errors([&] { (void)reader.read(e.name); });
    coat::fuzz::expect_only_library_errors([&] {
      if (e.numel() > 1) (void)reader.read_slice(e.name, 1, e.numel() - 1);
    });
  }
}

void read_in_parallel(const std::filesystem::path& path, int io_threads) {
  const coat::io::TensorFileReader reader = coat::io::TensorFileReader::open(path);
  coat::fuzz::expect_only_library_errors([&] { reader.verify_all(io_threads); });
  const coat::ContextPtr cpu = coat::ops::make_context(coat::Device::cpu());
  std::vector<coat::io::TensorSliceRead> reads;
  for (const coat::io::TensorFileEntry& e : reader.entries()) {
    if (e.bytes > kMaxCopied || e.numel() < 2) continue;
    reads.push_back({e.name, 1, coat::Tensor::empty(cpu, {e.numel() - 1}, e.dtype)});
  }
  coat::fuzz::expect_only_library_errors([&] { reader.read_slices_into(reads, io_threads); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = coat::fuzz::write_scratch("rank_00000.bin", data, size);
  coat::fuzz::expect_only_library_errors([&] { read_one_by_one(path); });
  uint32_t mix = 0;
  for (size_t i = 0; i < size; ++i) mix = mix * 31u + data[i];
  const int io_threads = mix % 16 == 0 ? 2 : 1;
  coat::fuzz::expect_only_library_errors([&] { read_in_parallel(path, io_threads); });
  return 0;
}
