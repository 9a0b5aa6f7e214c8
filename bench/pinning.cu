// Pinning host memory, four ways, and how long each blocks another thread's CUDA calls: the measurement
// behind src/backend/cuda/pinned_host.cpp. A prober thread launches a tiny kernel and synchronises every
// 0.2 ms; its longest wait is printed beside each method. Also checks the D2H copy speed into each buffer.
//   nvcc -O2 -std=c++17 -arch=sm_90a -o /tmp/pinning bench/pinning.cu && /tmp/pinning
// (standalone: it does not link coat and the build does not compile it.)
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <chrono>
#include <thread>
#include <atomic>
#include <vector>
#include <cstdio>
#include <cstring>
using Clock = std::chrono::steady_clock;
static double now() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }
__global__ void tiny(float* x) { x[threadIdx.x] += 1.f; }
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return; } } while (0)
struct Prober {
  std::atomic<bool> stop{false};
  double max_stall = 0; long n = 0;
  std::thread t;
  float* d;
  void start() { cudaMalloc(&d, 1024); stop = false; max_stall = 0; n = 0;
    t = std::thread([this] { cudaSetDevice(0); while (!stop) { double a = now(); tiny<<<1, 32>>>(d); cudaDeviceSynchronize(); double s = now() - a; if (s > max_stall) max_stall = s; n++; std::this_thread::sleep_for(std::chrono::microseconds(200)); } }); }
  void finish(const char* what, double secs, size_t bytes) { stop = true; t.join(); cudaFree(d);
    printf("%-48s %6.2f s  %6.2f GB/s  prober max stall %7.1f ms over %ld launches\n", what, secs, bytes / secs / 1e9, max_stall * 1e3, n); }
};
static void touch(char* p, size_t bytes, int threads) {
  std::vector<std::thread> ts;
  size_t per = (bytes / threads + 4095) / 4096 * 4096;
  for (int i = 0; i < threads; i++) ts.emplace_back([=] { size_t b = i * per; if (b >= bytes) return; size_t e = std::min(bytes, b + per); for (size_t o = b; o < e; o += 4096) p[o] = 0; });
  for (auto& t : ts) t.join();
}
static void copy_bw(void* host, size_t bytes, const char* what) {
  void* d; cudaMalloc(&d, bytes); cudaMemset(d, 1, bytes); cudaDeviceSynchronize();
  double a = now(); cudaError_t e = cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost); double s = now() - a;
  if (e != cudaSuccess) printf("    D2H copy %-36s failed: %s\n", what, cudaGetErrorString(e));
  else printf("    D2H copy %-36s %6.2f GB/s\n", what, bytes / s / 1e9);
  (void)cudaGetLastError(); cudaFree(d);
}
int main() {
  cudaSetDevice(0); cudaFree(0);
  const size_t G = 1ull << 30, total = 8 * G, chunk = 256ull << 20;
  Prober p;
  { p.start(); double a = now(); void* h; cudaHostAlloc(&h, total, cudaHostAllocPortable); double s = now() - a; p.finish("A cudaHostAlloc 8 GiB, one call", s, total); copy_bw(h, 2 * G, "(one alloc)"); cudaFreeHost(h); }
  { p.start(); double a = now(); std::vector<void*> hs; for (size_t o = 0; o < total; o += chunk) { void* h; cudaHostAlloc(&h, chunk, cudaHostAllocPortable); hs.push_back(h);} double s = now() - a; p.finish("B cudaHostAlloc 8 GiB, 256 MiB calls", s, total); for (auto h : hs) cudaFreeHost(h); }
  for (int threads : {1, 16}) {
    char* m = (char*)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    double a = now(); touch(m, total, threads); double t1 = now() - a;
    p.start(); a = now(); cudaError_t e = cudaHostRegister(m, total, cudaHostRegisterPortable); double s = now() - a;
    char name[96]; snprintf(name, sizeof name, "C touch(%d thr) %.2f s + cudaHostRegister one", threads, t1); p.finish(name, s, total);
    if (e) printf("register: %s\n", cudaGetErrorString(e));
    copy_bw(m, 2 * G, "(registered)"); cudaHostUnregister(m); munmap(m, total);
  }
  {
    char* m = (char*)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    double a = now(); touch(m, total, 16); double t1 = now() - a;
    p.start(); a = now(); for (size_t o = 0; o < total; o += chunk) cudaHostRegister(m + o, chunk, cudaHostRegisterPortable); double s = now() - a;
    char name[96]; snprintf(name, sizeof name, "D touch(16) %.2f s + register 256 MiB chunks", t1); p.finish(name, s, total);
    copy_bw(m + chunk / 2, 2 * G, "(spanning chunks)"); copy_bw(m, chunk, "(inside one chunk)");
    for (size_t o = 0; o < total; o += chunk) cudaHostUnregister(m + o); munmap(m, total);
  }
  {
    char* m = (char*)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    p.start(); double a = now(); cudaHostRegister(m, total, cudaHostRegisterPortable); double s = now() - a; p.finish("E MAP_POPULATE + register one", s, total); cudaHostUnregister(m); munmap(m, total);
  }
  {
    p.start(); double a = now(); char* m = (char*)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); cudaHostRegister(m, total, cudaHostRegisterPortable); double s = now() - a; p.finish("F register untouched mmap", s, total); copy_bw(m, 2*G, "(untouched registered)"); cudaHostUnregister(m); munmap(m, total);
  }
  { p.start(); double a = now(); std::this_thread::sleep_for(std::chrono::milliseconds(500)); p.finish("G idle baseline 0.5 s", now() - a, total); }
}
