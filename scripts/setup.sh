#!/usr/bin/env bash
# Installs what coat-train needs from Debian/Ubuntu packages (only what is missing), then configures and
# builds into build/. Idempotent. Works as root on a fresh Debian 12 / Ubuntu 24.04 machine, or through
# sudo. Environment: COAT_CUDA=AUTO|ON|OFF (default AUTO), COAT_WERROR=ON|OFF, COAT_BUILD_DIR (build),
# COAT_BUILD_TYPE (Release), COAT_JOBS (all cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(build-essential cmake ninja-build pkg-config ccache
          nlohmann-json3-dev libspdlog-dev libcli11-dev libgtest-dev
          libopenmpi-dev openmpi-bin libopenblas-dev libsentencepiece-dev sentencepiece)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "setup: missing packages (${missing[*]}) and neither root nor sudo available" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The CUDA toolkit is not a Debian package here: use it where it is installed.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

build_dir=${COAT_BUILD_DIR:-build}
generator=()
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S . -B "$build_dir" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE="${COAT_BUILD_TYPE:-Release}" \
  -DCOAT_CUDA="${COAT_CUDA:-AUTO}" \
  -DCOAT_WERROR="${COAT_WERROR:-OFF}" >/dev/null
cmake --build "$build_dir" -j "${COAT_JOBS:-$(nproc)}"
echo "setup: built into $build_dir ($(grep -q 'COAT_WITH_CUDA=1' "$build_dir/compile_commands.json" 2>/dev/null && echo 'CUDA on' || echo 'CPU only'))"
