#!/usr/bin/env bash
# Prints the sha256 (hex) of this folder's CUDA sources (*.cu, *.cuh) concatenated in sorted path
# order (C locale). Written next to the fatbin by build-fatbin.sh; compare to detect a stale build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
find . -maxdepth 1 -type f \( -name '*.cu' -o -name '*.cuh' \) | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1
