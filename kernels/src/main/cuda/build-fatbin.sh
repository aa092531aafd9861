#!/usr/bin/env bash
# Builds kernels/src/main/resources/org/moba/kernels/cuda/moba.fatbin from the CUDA sources in this
# folder, moba-geometry.properties (moba_geometry.cu: the kernels' launch geometry for the Java side) and
# moba.fatbin.sha256 next to it: the sha256 of the CUDA sources (*.cu, *.cuh) concatenated
# in sorted path order, so a stale fatbin can be detected without nvcc.
#
# Usage: build-fatbin.sh [-v]      -v: print per-kernel register / spill / shared-memory use
# Env:   NVCC (default: nvcc on PATH), MOBA_GENCODE (override the target list, for quick dev builds)
# No --use_fast_math: the gate must compute true fp32 scores. -compress-all: the driver inflates the
# fatbin at load; it keeps the jar (and the repository) ~7x smaller.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="$here/../resources/org/moba/kernels/cuda"
nvcc="${NVCC:-nvcc}"
verbose=()
[[ "${1:-}" == "-v" ]] && verbose=(-Xptxas -v)

gencode=${MOBA_GENCODE:-"-gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86
 -gencode arch=compute_89,code=sm_89 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80"}

mkdir -p "$out_dir"
# shellcheck disable=SC2086
"$nvcc" -std=c++17 -O3 -lineinfo $gencode "${verbose[@]}" -Xfatbin=-compress-all -fatbin -o "$out_dir/moba.fatbin.tmp" "$here/moba.cu"
mv "$out_dir/moba.fatbin.tmp" "$out_dir/moba.fatbin"
# The launch geometry the kernels were compiled with (threads, tile rows, shared memory), read by the Java launch code;
# a host program, so no GPU is needed. Its sources.sha256 ties it to this build.
geometry_bin="$(mktemp -d)/moba_geometry"
"$nvcc" -std=c++17 -O2 -arch=sm_90a -o "$geometry_bin" "$here/moba_geometry.cu"
{ "$geometry_bin"; echo "sources.sha256=$("$here/source-hash.sh")"; } > "$out_dir/moba-geometry.properties"
rm -rf "$(dirname "$geometry_bin")"
"$here/source-hash.sh" > "$out_dir/moba.fatbin.sha256"
echo "wrote $out_dir/moba.fatbin ($(stat -c %s "$out_dir/moba.fatbin") bytes), sha256 of sources $(cat "$out_dir/moba.fatbin.sha256")"
