#!/usr/bin/env bash
# score throughput on one GPU against the bound set by Parquet decode and host<->device copies (docs/perf.md).
# usage (from the project root on a GPU host prepared with pack.sh + stage.sh): bash job/src/test/device/gpu-score-bound.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/../../../.." && pwd)
out=${OUT:-$root/gpu-out}
work=/tmp/moba-score-bound
mkdir -p "$out" "$work"
. /opt/moba-device/env.sh
moba() {
  java $MOBA_JAVA_OPTS -Xmx48g -Dspark.master='local[8]' -Dspark.ui.enabled=false \
      -Dlog4j.configurationFile="$root/conf/log4j2.properties" -cp "$MOBA_CP" org.moba.job.MobaCli "$@"
}
[ -d "$work/in" ] || moba gen --out "$work/in" --lengths uniform:256:256-8192 --heads 16/4 --head-dim 128 \
    --partitions 8 > "$out/gen.log" 2>&1
moba score --backend cuda --input "$work/in" --out "$work/score" --chunk 512 --topk 3 --measure-bound \
    > "$out/score.log" 2>&1
echo "score exit $?"
grep -vE '^\s+at |Stage ' "$out/score.log" | tail -25
cp "$work/score/score-summary.json" "$out/" 2>/dev/null
