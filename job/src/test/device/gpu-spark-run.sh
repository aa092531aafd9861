#!/usr/bin/env bash
# Runs the Spark jobs on a GPU host with the CUDA backend (Spark local[8], tasks spread over the visible GPUs),
# from a host prepared with shared/device/pack.sh + stage.sh. Copies the summaries, reports and logs to $OUT.
# gen writes safetensors; score runs three times on it: outputs in rows with --measure-bound (its throughput against
# the physical bound, max(raw read of the input files, loaded bytes at the timed pinned host-to-device rate per GPU);
# docs/perf.md), outputs as files, and metrics only.
# MOBA_BENCH=0 skips bench, MOBA_SWEEP=0 the sweep. MOBA_JFR=1 records each run with Java Flight Recorder (profile
# settings) into $OUT/<run>.jfr, for `jfr print --events jdk.ExecutionSample` or JDK Mission Control on another machine.
# usage (from the project root on the GPU host):  bash job/src/test/device/gpu-spark-run.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/../../../.." && pwd)
out=${OUT:-$root/gpu-out}
work=/tmp/moba-gpu-spark
mkdir -p "$out" "$work"
. /opt/moba-device/env.sh
moba() {
  # spark.ui.enabled=false: the re-zipped jars of a packed base lack directory entries the web UI looks up.
  local jfr=()
  [ "${MOBA_JFR:-0}" = 1 ] && jfr=("-XX:StartFlightRecording=filename=$out/${run_name:-moba}.jfr,settings=profile")
  java $MOBA_JAVA_OPTS ${jfr[@]+"${jfr[@]}"} -Xmx48g -Dspark.master='local[8]' -Dspark.ui.enabled=false -Dlog4j.configurationFile="$root/conf/log4j2.properties" -Dmoba.log="$out/moba-spark.log" -cp "$MOBA_CP" \
      org.moba.job.MobaCli "$@"
}
status=0
run() {
  local name=$1; shift
  local t0=$(date +%s.%N)
  run_name=$name moba "$@" > "$out/$name.log" 2>&1; local rc=$?
  local t1=$(date +%s.%N)
  awk -v n="$name" -v rc="$rc" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s: exit %d, wall %.1f s\n", n, rc, b - a }' | tee -a "$out/wall.txt"
  tail -n 25 "$out/$name.log"
  [ $rc = 0 ] || status=1
}
nvidia-smi --query-gpu=name,pci.bus_id --format=csv,noheader
run gen gen --overwrite --out "$work/in" --lengths uniform:256:256-8192 --heads 16/4 --head-dim 128 --partitions 8
# Three forms of the output on the same input: in rows (with the bound), as files, metrics only.
run score score --backend cuda --input "$work/in" --out "$work/score" --overwrite --chunk 512 --topk 3 --measure-bound
run score-files score --backend cuda --input "$work/in" --out "$work/score-files" --overwrite --chunk 512 --topk 3 \
    --outputs files
run score-metrics score --backend cuda --input "$work/in" --out "$work/score-metrics" --overwrite --chunk 512 \
    --topk 3 --no-write-outputs
[ "${MOBA_BENCH:-1}" = 0 ] || run bench bench --backend cuda --spec "$root/conf/bench-flashmoba.json" --repeats 10 --out "$work/bench" --overwrite
[ "${MOBA_SWEEP:-1}" = 0 ] || run sweep sweep --backend cuda --backward --out "$work/sweep" --overwrite
for f in bench/bench-summary.json sweep/sweep-summary.json bench/bench-report.html; do
  cp "$work/$f" "$out/" 2>/dev/null
done
for s in score score-files score-metrics; do
  cp "$work/$s/score-summary.json" "$out/$s-summary.json" 2>/dev/null
done
exit $status
