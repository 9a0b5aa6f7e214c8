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

# cudnn-frontend (header-only C++ wrapper of cuDNN's graph API; the CUDA attention needs it) comes from
# PyPI: install it when the CUDA toolkit is here and its headers are not. --no-deps: only the headers are
# used. A failure only warns (the build then throws NotImplemented from CUDA attention).
cudnn_frontend_found() {
  python3 -c "print(next(str(f.locate().parent) for f in __import__('importlib.metadata').metadata.files('nvidia-cudnn-frontend') if str(f).endswith('include/cudnn_frontend.h')))" >/dev/null 2>&1
}
if [[ ${COAT_CUDA:-AUTO} != OFF ]] && command -v nvcc >/dev/null && command -v python3 >/dev/null &&
   ! cudnn_frontend_found; then
  echo "setup: installing nvidia-cudnn-frontend (cuDNN attention headers) with pip"
  if ! python3 -m pip install -q --no-deps nvidia-cudnn-frontend 2>/dev/null &&
     ! python3 -m pip install -q --no-deps --user --break-system-packages nvidia-cudnn-frontend; then
    echo "setup: WARNING: could not pip-install nvidia-cudnn-frontend (is python3-pip installed?);" \
         "CUDA attention will be unavailable" >&2
  fi
fi

# scripts/prepare_data.py (Hugging Face tokenizer.json -> token files and SFT loss masks) needs tokenizers and
# jinja2 from PyPI; its test skips without them. Installed when missing; a failure only warns.
if command -v python3 >/dev/null; then
  py_missing=()
  for module in tokenizers jinja2; do python3 -c "import $module" 2>/dev/null || py_missing+=("$module"); done
  if ((${#py_missing[@]})); then
    echo "setup: installing ${py_missing[*]} with pip (for scripts/prepare_data.py)"
    if ! python3 -m pip install -q "${py_missing[@]}" 2>/dev/null &&
       ! python3 -m pip install -q --user --break-system-packages "${py_missing[@]}"; then
      echo "setup: WARNING: could not pip-install ${py_missing[*]} (is python3-pip installed?);" \
           "scripts/prepare_data.py will not run and its test skips" >&2
    fi
  fi
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
