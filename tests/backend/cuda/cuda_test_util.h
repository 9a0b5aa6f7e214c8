// Shared by the CUDA tests: a fixture that skips without CUDA or a device and otherwise holds a CPU and a
// CUDA context.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "coat/ops/runtime.h"

namespace coat::test {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef COAT_WITH_CUDA
    GTEST_SKIP() << "built without CUDA";
#else
    if (ops::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount found none";
    gpu = ops::make_context(Device::cuda(0));
#endif
  }
  ContextPtr cpu = std::make_shared<CpuContext>();
  ContextPtr gpu;
};

}  // namespace coat::test
