// COAT_HOST_DEVICE marks inline functions shared by the CPU backend and CUDA kernels, so that both
// run literally the same arithmetic (the basis of bit-identical CPU/GPU results).
#pragma once

#if defined(__CUDACC__)
#define COAT_HOST_DEVICE __host__ __device__
#define COAT_DEVICE_CODE 1
#else
#define COAT_HOST_DEVICE
#endif
