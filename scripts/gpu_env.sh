#!/usr/bin/env bash
# Source this on a GPU machine that runs a build folder made elsewhere:
#   source scripts/gpu_env.sh
# - unpacks libraries packed by scripts/pack_gpu_libs.sh (OpenBLAS & co., absent on the GPU hosts) into
#   /tmp/coat-libs and puts them on LD_LIBRARY_PATH;
# - puts the cuDNN/NCCL that PyTorch ships (newer than the hosts' system ones) first, when present;
# - makes the checkout reachable under the absolute path the build folder was configured with (CTest files
#   hold absolute paths).
_coat_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -f "$_coat_root/.gpu/libs.tar.xz" ]]; then
  mkdir -p /tmp/coat-libs && tar -C /tmp/coat-libs -xJf "$_coat_root/.gpu/libs.tar.xz"
  export LD_LIBRARY_PATH="/tmp/coat-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
_coat_sp=$(python3 -c "import torch,os;print(os.path.dirname(os.path.dirname(torch.__file__)))" 2>/dev/null || true)
for _d in "$_coat_sp/nvidia/cudnn/lib" "$_coat_sp/nvidia/nccl/lib"; do
  [[ -n "$_coat_sp" && -d "$_d" ]] && export LD_LIBRARY_PATH="$_d:$LD_LIBRARY_PATH"
done
[[ -d /usr/local/cuda/lib64 ]] && export LD_LIBRARY_PATH="/usr/local/cuda/lib64:$LD_LIBRARY_PATH"
# CUPTI (coat-bench's kernel table, the kernel profiler test): the toolkit's, else pip's nvidia-cuda-cupti;
# appended, so that it shadows none of the libraries chosen above.
for _d in /usr/local/cuda/extras/CUPTI/lib64 /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
          "$_coat_sp/nvidia/cu13/lib" "$_coat_sp/nvidia/cuda_cupti/lib"; do
  if [[ -e "$_d/libcupti.so.13" ]]; then
    [[ ":$LD_LIBRARY_PATH:" == *":$_d:"* ]] || export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$_d"
    break
  fi
done
_coat_configured=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$_coat_root/build/CMakeCache.txt" 2>/dev/null || true)
if [[ -n "$_coat_configured" && "$_coat_configured" != "$_coat_root" && ! -e "$_coat_configured" ]]; then
  mkdir -p "$(dirname "$_coat_configured")" && ln -sfn "$_coat_root" "$_coat_configured"
fi
unset _coat_root _coat_sp _d _coat_configured
