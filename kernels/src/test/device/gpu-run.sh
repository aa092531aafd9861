#!/usr/bin/env bash
# Runs the CUDA backend's tests (forward and backward: every test class of org.moba.kernels.cuda), then KernelBench
# (the forward table, then the training table: forward + backward), on a GPU host prepared with
# shared/device/pack.sh + stage.sh (see /work/shared/device/README.md). Logs and JUnit XML reports go to $OUT
# (default ./gpu-out); a short summary (test counts, both benchmark tables) is printed last and kept in
# $OUT/summary.txt.
#
# usage (from the project root on the GPU host):  bash kernels/src/test/device/gpu-run.sh [KernelBench options]
#   e.g. bash kernels/src/test/device/gpu-run.sh --only FlashMoBA
# Environment: MOBA_BENCH_ENGINE (default wgmma on compute capability 9.0, else auto) is KernelBench's forward engine,
#              MOBA_ENGINES (default "wgmma mma-sync" on compute capability 9.0, else "auto") lists the forward engines the tests run under, MOBA_TESTS=0 skips the tests, MOBA_BENCH=0 skips the forward benchmark, MOBA_TRAIN_BENCH=0 the
#              training benchmark, MOBA_TEST_SEED=N reruns the tests with a given seed,
#              MOBA_TEST_CLASS=CudaBackwardTest[,...] runs only those classes of org.moba.kernels.cuda.
set -uo pipefail
root=$(cd "$(dirname "$0")/../../../.." && pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
if [ -z "${MOBA_CP:-}" ]; then
  . /opt/moba-device/env.sh || { echo "gpu-run.sh: run .device/app/stage.sh first (no /opt/moba-device/env.sh)" >&2; exit 2; }
fi
nvidia-smi --query-gpu=name,pci.bus_id,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
status=0
summary="$out/summary.txt"
hopper=0
[ "$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)" = "9.0" ] && hopper=1
# KernelBench's forward engine: the sm_90a engine on a Hopper GPU unless MOBA_BENCH_ENGINE says otherwise.
bench_engine=${MOBA_BENCH_ENGINE:-$([ "$hopper" = 1 ] && echo wgmma || echo auto)}
{ echo "== gpu-run.sh summary =="; tail -n +2 "$out/gpu.txt"; } > "$summary"

if [ "${MOBA_TESTS:-1}" != 0 ]; then
  seed=${MOBA_TEST_SEED:+-Dmoba.test.seed=$MOBA_TEST_SEED}
  if [ -n "${MOBA_TEST_CLASS:-}" ]; then
    select=$(echo "$MOBA_TEST_CLASS" | tr ',' '\n' | sed 's/^/--select-class=org.moba.kernels.cuda./' | paste -sd' ')
  else
    select="--select-package=org.moba.kernels.cuda"
  fi
  # Once per forward engine (ForwardEngine), so both stay tested on a Hopper GPU; elsewhere the default engine only.
  # From kernels/, so FatbinFreshnessTest finds src/main/cuda.
  engines="auto"
  [ "$hopper" = 1 ] && engines="wgmma mma-sync"
  for engine in ${MOBA_ENGINES:-$engines}; do
    log="$out/tests-$engine.log"
    (cd "$root/kernels" && java $MOBA_JAVA_OPTS -Xmx32g $seed -Dmoba.cuda.engine=$engine -cp "$MOBA_CP" \
        org.junit.platform.console.ConsoleLauncher execute $select \
        --details=tree --disable-banner --disable-ansi-colors --reports-dir="$out/junit-$engine") > "$log" 2>&1
    rc=$?
    tail -n 40 "$log"
    echo "gpu-run.sh: tests (engine $engine) exited with $rc (full log: $log)"
    [ $rc = 0 ] || status=1
    {
      echo "tests ($select, engine $engine, exit $rc):"
      grep -E '^\[ +[0-9]+ (tests|containers) (successful|failed|skipped|aborted)' "$log" | sed 's/^/  /'
      grep -E '✘' "$log" | head -n 20 | sed 's/^/  FAILED /'
    } >> "$summary"
  done
fi

# The best dense kernel on the same card, for KernelBench's "x cuDNN" columns.
cudnn=()
if [ "${MOBA_BENCH:-1}" != 0 ] || [ "${MOBA_TRAIN_BENCH:-1}" != 0 ]; then
  if python3 "$root/kernels/src/test/device/cudnn_dense.py" --backward --csv "$out/cudnn.csv" > "$out/cudnn.log" 2>&1; then
    cudnn=(--cudnn "$out/cudnn.csv")
  else
    echo "gpu-run.sh: cudnn_dense.py failed (log: $out/cudnn.log); the tables have no cuDNN columns"
  fi
  cat "$out/cudnn.log"
  { echo; echo "cuDNN dense (cudnn_dense.py):"; grep -E '^cuDNN' "$out/cudnn.log"; } >> "$summary"
fi

if [ "${MOBA_BENCH:-1}" != 0 ]; then
  java -Xmx64g -Dmoba.cuda.engine=$bench_engine -cp "$MOBA_CP" org.moba.kernels.bench.KernelBench --mode forward "${cudnn[@]}" "$@" > "$out/bench.log" 2>&1
  rc=$?
  cat "$out/bench.log"
  echo "gpu-run.sh: KernelBench (forward) exited with $rc (log: $out/bench.log)"
  [ $rc = 0 ] || status=1
  { echo; echo "forward (KernelBench --mode forward, exit $rc):"; grep -E '^(shape|FlashMoBA|MoBA|1x64K|4096|peak)' "$out/bench.log"; } >> "$summary"
fi

if [ "${MOBA_TRAIN_BENCH:-1}" != 0 ]; then
  java -Xmx64g -Dmoba.cuda.engine=$bench_engine -cp "$MOBA_CP" org.moba.kernels.bench.KernelBench --mode training "${cudnn[@]}" "$@" > "$out/bench-training.log" 2>&1
  rc=$?
  cat "$out/bench-training.log"
  echo "gpu-run.sh: KernelBench (training) exited with $rc (log: $out/bench-training.log)"
  [ $rc = 0 ] || status=1
  { echo; echo "training (KernelBench --mode training, exit $rc):"; sed -n '/^== training summary/,$p' "$out/bench-training.log"
    grep -E '^peak extra' "$out/bench-training.log"; } >> "$summary"
fi

echo
cat "$summary"
exit $status
