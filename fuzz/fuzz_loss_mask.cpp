// Loss-mask files (data.loss_mask): the header, the size and every entry are checked when opened; the input is
// the file.
#include "coat/data/loss_mask_file.h"
#include "fuzz_common.h"

#include <algorithm>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = coat::fuzz::write_scratch("tokens.bin.mask", data, size);
  coat::fuzz::expect_only_library_errors([&] {
    const coat::data::LossMaskFile f = coat::data::LossMaskFile::open(path);
    if (f.size() == 0) return;
    (void)f.counts(f.size() - 1);
    std::vector<int32_t> targets(std::min<uint64_t>(f.size(), 17), 5);
    f.mask_targets(f.size() - targets.size(), targets, -1);
    if (f.counted_in(0, f.size()) != f.counted()) std::abort();  // the scan and the range count disagree
    (void)f.counted_in(f.size() - 1, 2);  // past the end: refused with an IoError
  });
  return 0;
}
