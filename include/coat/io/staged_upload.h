// Host bytes into device tensors through two page-locked chunk buffers, filled on several threads while the
// calling thread copies the other one to the device: a checkpoint's load into GPU memory.
//
// The single-tensor path (tensor_bytes.h: copy_bytes_into) stages a whole tensor in fresh pageable memory on one
// thread, then copies it through the driver's own staging: for a 7B resume that is 40 GB memcpy'd into first-
// touched pages by one thread and copied to the device at pageable speed, one tensor after another. Here the
// pinned buffers are made once per batch (ops::host_staging_context: pinned under CUDA; for CPU destinations the
// destination's own context), the reads of the file are spread over io_threads, and the device copy of chunk i
// overlaps the filling of chunk i + 1.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/io/parallel_io.h"

namespace coat::io {

/// dst.nbytes() bytes at `from` into `dst` (contiguous, any device), bit for bit.
struct StagedUpload {
  const uint8_t* from = nullptr;
  Tensor dst;
};

/// Copies every upload through two staging buffers of `chunk_bytes` (a multiple of 8) on `io_threads` fill
/// threads (1: all on the calling thread, no overlap). `before` (optional) runs on the fill thread just ahead of
/// each piece it reads (MappedFile::will_need). Every destination must be contiguous and all on one device.
/// Throws the earliest failure (a fill, the device copy); the destinations are then partly written.
void upload_staged(const std::vector<StagedUpload>& uploads, int io_threads,
                   const std::function<void(const uint8_t*, uint64_t)>& before = {},
                   uint64_t chunk_bytes = kIoChunkBytes);

}  // namespace coat::io
