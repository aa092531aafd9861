#!/usr/bin/env bash
# Spark GPU discovery script: prints {"name":"gpu","addresses":["0","1",...]} for the GPUs this process may use.
# Addresses are CUDA device ordinals as the process sees them, so with CUDA_VISIBLE_DEVICES=2,3 they are "0","1".
# A host without GPUs (no nvidia-smi, no driver, or none visible) gets an empty list rather than an error.
set -u
addresses=()
if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
  # Honour an explicit selection: one ordinal per listed device ("" or "-1" means none).
  IFS=',' read -r -a visible <<< "${CUDA_VISIBLE_DEVICES}"
  i=0
  for d in "${visible[@]}"; do
    d=$(echo "$d" | tr -d '[:space:]')
    [ -z "$d" ] && continue
    [ "$d" = "-1" ] && break
    addresses+=("\"$i\""); i=$((i + 1))
  done
elif command -v nvidia-smi >/dev/null 2>&1; then
  while read -r index; do
    index=$(echo "$index" | tr -d '[:space:]')
    [ -n "$index" ] && addresses+=("\"$index\"")
  done < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
fi
joined=$(IFS=,; echo "${addresses[*]:-}")
echo "{\"name\":\"gpu\",\"addresses\":[${joined}]}"
