// Shared by the benchmark tools: runs a piece of GPU work `runs` times under CUPTI's kernel activity and returns
// the kernel table (train/bench_report.h), or why there is none (a build without the CUPTI profiler, or
// CUPTI's refusal).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <variant>

#include "coat/core/context.h"
#include "coat/train/bench_report.h"
#ifdef COAT_HAVE_CUPTI
#include "coat/backend/cuda/kernel_profiler.h"
#endif

namespace coat::tools {

/// The kernel table of `runs` calls of `run` (steps = runs), or a sentence saying why it was not measured.
inline std::variant<train::KernelTable, std::string> profile_kernels([[maybe_unused]] const std::function<void()>& run,
                                                                     [[maybe_unused]] const ContextPtr& ctx,
                                                                     [[maybe_unused]] int64_t runs) {
#ifdef COAT_HAVE_CUPTI
  try {
    cuda::KernelProfiler profiler;
    train::KernelTable table;
    ctx->synchronize();
    profiler.start();
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < runs; ++i) run();
    ctx->synchronize();
    table.steps_wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    profiler.stop();
    table.steps = runs;
    for (const cuda::KernelActivity& k : profiler.kernels()) table.kernels.push_back({k.name, k.calls, k.total_ms});
    table.dropped_records = profiler.dropped_records();
    return table;
  } catch (const Error& e) {
    return std::string("not measured: ") + e.what();
  }
#else
  return std::string("not measured: this build has no CUPTI kernel profiler");
#endif
}

}  // namespace coat::tools
