#!/usr/bin/env bash
# Packs the shared libraries that build/libcoat.so needs but the GPU hosts lack (OpenBLAS, spdlog, fmt,
# SentencePiece) into .gpu/libs.tar.xz (ignored by git), for carrying to a GPU machine together with
# build/. scripts/gpu_env.sh unpacks them there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp=$(mktemp -d)
ldd build/libcoat.so | awk '$1 ~ /^lib(openblas|gfortran|quadmath|spdlog|fmt|sentencepiece)/ {print $3}' | xargs -r -I{} cp -L {} "$tmp/"
mkdir -p .gpu
tar -C "$tmp" -cJf .gpu/libs.tar.xz .
rm -rf "$tmp"
echo "packed: $(tar -tJf .gpu/libs.tar.xz | grep -c '\.so') libraries into .gpu/libs.tar.xz ($(du -h .gpu/libs.tar.xz | cut -f1))"
