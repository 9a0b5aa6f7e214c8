// upload_staged: a two-buffer pipeline; chunks never straddle two uploads, so each is one device copy.
#include "coat/io/staged_upload.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "coat/core/error.h"
#include "coat/io/tensor_bytes.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"

namespace coat::io {
namespace {

struct Chunk {
  size_t upload = 0;
  uint64_t offset = 0;  // bytes into the upload
  uint64_t bytes = 0;
};

std::vector<Chunk> plan_chunks(const std::vector<StagedUpload>& uploads, uint64_t chunk_bytes) {
  std::vector<Chunk> chunks;
  for (size_t k = 0; k < uploads.size(); ++k) {
    for (const ByteRange& r : split_bytes(uploads[k].dst.nbytes(), chunk_bytes))
      chunks.push_back({k, r.offset, r.bytes});
  }
  return chunks;
}

void check_uploads(const std::vector<StagedUpload>& uploads, uint64_t chunk_bytes) {
  COAT_ARG_CHECK(chunk_bytes >= 8 && chunk_bytes % 8 == 0, "upload_staged", "chunk of ", chunk_bytes,
                 " bytes; expected a positive multiple of 8");
  for (size_t k = 0; k < uploads.size(); ++k) {
    const Tensor& dst = uploads[k].dst;
    COAT_ARG_CHECK(dst.defined() && dst.is_contiguous(), "upload_staged", "destination ", k,
                   " is undefined or not contiguous");
    COAT_ARG_CHECK(uploads[k].from != nullptr || dst.numel() == 0, "upload_staged", "upload ", k,
                   " has no source bytes");
    COAT_ARG_CHECK(dst.device() == uploads.front().dst.device(), "upload_staged", "destination ", k, " is on ",
                   dst.device().str(), ", the first on ", uploads.front().dst.device().str());
  }
}

}  // namespace

void upload_staged(const std::vector<StagedUpload>& uploads, int io_threads,
                   const std::function<void(const uint8_t*, uint64_t)>& before, uint64_t chunk_bytes) {
  check_io_threads(io_threads, "upload_staged");
  if (uploads.empty()) return;
  check_uploads(uploads, chunk_bytes);
  const std::vector<Chunk> chunks = plan_chunks(uploads, chunk_bytes);
  if (chunks.empty()) return;
  uint64_t largest = 0;
  for (const Chunk& c : chunks) largest = std::max(largest, c.bytes);
  // The buffers outlive the pool: a fill still running when a device copy throws writes into live memory.
  const ContextPtr host = ops::host_staging_context(uploads.front().dst.context());
  const int64_t staged_bytes = static_cast<int64_t>(largest);
  std::array<Tensor, 2> staging = {Tensor::empty(host, {staged_bytes}, DType::U8, MemoryCategory::Workspace),
                                   Tensor::empty(host, {staged_bytes}, DType::U8, MemoryCategory::Workspace)};
  TaskPool pool(io_threads);
  // Pieces of at least 1 MiB, about one per thread.
  auto fill = [&](size_t i) {
    const Chunk& c = chunks[i];
    const uint8_t* from = uploads[c.upload].from + c.offset;
    uint8_t* to = static_cast<uint8_t*>(staging[i % 2].data_ptr());
    const uint64_t piece = std::max<uint64_t>(uint64_t{1} << 20, (c.bytes + io_threads - 1) / io_threads);
    for (const ByteRange& r : split_bytes(c.bytes, piece)) {
      pool.submit([&before, from, to, r] {
        if (before) before(from + r.offset, r.bytes);
        std::memcpy(to + r.offset, from + r.offset, r.bytes);
      });
    }
  };
  fill(0);
  pool.wait();
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i + 1 < chunks.size()) fill(i + 1);
    const Chunk& c = chunks[i];
    const Tensor& dst = uploads[c.upload].dst;
    const size_t size = dtype_size(dst.dtype());
    const DType bits = bits_dtype(dst.dtype());
    const int64_t first = static_cast<int64_t>(c.offset / size), count = static_cast<int64_t>(c.bytes / size);
    Tensor to = dst.view_as(bits).reshape({dst.numel()}).slice(0, first, first + count);
    ops::copy_(to, Tensor::from_storage(staging[i % 2].storage(), {count}, bits));
    pool.wait();
  }
}

}  // namespace coat::io
