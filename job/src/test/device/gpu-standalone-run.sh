#!/usr/bin/env bash
# Issue 7 on one GPU host, Spark standalone: a master and one worker offering every GPU through
# conf/discover-gpus.sh, one executor per GPU (spark.executor.resource.gpu.amount=1). In order, each with its wall time:
#   bench       the FlashMoBA shape (2 x 64K, H16, D128, chunk 128, topk 8, fp16) on every GPU
#   gen         the score dataset (local mode, CPU only), while a second process (bench in local mode,
#               CUDA_VISIBLE_DEVICES = the last GPU) starts loading the last GPU
#   bench-load  the same bench with the last GPU loaded: its straggler flag should fire; the load is then stopped
#   sweep       the default (quick) grid against the float64 oracle
#   score-1     score limited to one executor (spark.cores.max = executor cores), so one GPU
#   score-all   score on every GPU; the tokens/s ratio to score-1 is the scaling (target >= 0.9 x N)
#   score-half  score with spark.task.resource.gpu.amount=0.5 (two tasks share each GPU)
# then a table: per run exit, wall, tokens/s and the distinct (executor id, GPU address, CUDA ordinal, PCI bus id)
# its rows record, checked against `nvidia-smi --query-gpu=index,pci.bus_id`. A failed step is shown and the next one
# runs; the exit status is 1 when any step or check failed. Results: $OUT/summary.txt, $OUT/results.tar.gz (logs of
# every JVM incl. executors, CSV/JSON/HTML outputs, nvidia-smi samples).
#
# usage, from the project root on the GPU host after shared/device/pack.sh + stage.sh (no Java/Maven needed there):
#   bash job/src/test/device/gpu-standalone-run.sh          (about 5-7 minutes on 2 x H100: an estimate, never run)
# Environment (all optional): OUT (default ./gpu-out); MOBA_ENV (default /opt/moba-device/env.sh, which sets
# JAVA_HOME, MOBA_CP, MOBA_JAVA_OPTS); MOBA_DEADLINE_S (whole-run budget, default 480 s, which leaves a 10-minute
# device call time to stage the packed runtime: a step that would pass it is cut short or skipped, and the summary
# still comes); MOBA_EXECUTOR_CORES, MOBA_EXECUTOR_MEMORY_GB; MOBA_BENCH_ARGS,
# MOBA_LOAD_ARGS, MOBA_SWEEP_ARGS, MOBA_GEN_ARGS, MOBA_SCORE_ARGS (replace a job's size options); MOBA_MASTER_PORT.
# MOBA_FAKE_GPUS=N rehearses everything without GPUs: a fake discovery script with N addresses, backend auto (the
# CPU backend bound to each fake address), tiny sizes, no nvidia-smi (job/src/test/device/standalone-rehearsal.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
out=${OUT:-$root/gpu-out}
work=${MOBA_WORK:-/tmp/moba-standalone}
fake=${MOBA_FAKE_GPUS:-0}
deadline=${MOBA_DEADLINE_S:-480}
port=${MOBA_MASTER_PORT:-7077}
t_start=$SECONDS
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)   # executors start in their own folders: every path handed to them is absolute
logs=$work/logs
mkdir -p "$logs"
# shellcheck disable=SC1090
. "${MOBA_ENV:-/opt/moba-device/env.sh}" || { echo "cannot read ${MOBA_ENV:-/opt/moba-device/env.sh}" >&2; exit 2; }
status=0
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
say() { echo "[$(date +%H:%M:%S) +$((SECONDS - t_start))s] $*"; }

# --- The GPUs, as the worker will see them ----------------------------------------------------------------------
export SPARK_LOCAL_IP=127.0.0.1
if [ "$fake" -gt 0 ]; then
  disc=$work/fake-discover-gpus.sh
  addrs=$(seq -s, 0 $((fake - 1)) | sed 's/\([0-9]\+\)/"\1"/g')
  printf '#!/usr/bin/env bash\necho '"'"'{"name":"gpu","addresses":[%s]}'"'"'\n' "$addrs" > "$disc"
  chmod +x "$disc"
  backend=${MOBA_BACKEND:-auto}
  printf 'index, pci.bus_id\n' > "$work/gpus.csv"
else
  disc=$root/conf/discover-gpus.sh
  backend=${MOBA_BACKEND:-cuda}
  # CUDA numbers devices fastest-first by default; in PCI order its ordinals are nvidia-smi's indices.
  export CUDA_DEVICE_ORDER=PCI_BUS_ID
  [ -n "${CUDA_VISIBLE_DEVICES+x}" ] && say "note: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES is set; ordinals are relative to it"
  nvidia-smi --query-gpu=index,pci.bus_id --format=csv > "$work/gpus.csv" 2>&1 || status=1
  nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,driver_version --format=csv,noheader
  nvidia-smi topo -m > "$logs/nvidia-smi-topo.txt" 2>&1
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv -l 1 > "$logs/nvidia-smi.csv" 2>&1 &
  pids+=($!)
fi
found=$("$disc")
n=$(echo "$found" | grep -o '"[0-9][0-9]*"' | wc -l)
say "discovery script: $found ($n GPU(s))"
if [ "$n" -lt 1 ]; then echo "no GPU found by $disc" >&2; exit 2; fi

# --- Sizes -----------------------------------------------------------------------------------------------------
host_cores=$(nproc)
host_mem_gb=$(awk '/MemTotal/ { printf "%d", $2 / 1048576 }' /proc/meminfo)
if [ "$fake" -gt 0 ]; then
  cores=${MOBA_EXECUTOR_CORES:-2}
  mem_gb=${MOBA_EXECUTOR_MEMORY_GB:-1}
  driver_mem=1g
  bench_args=${MOBA_BENCH_ARGS:---dtype fp16 --heads 2/2 --head-dim 32 --chunk 64 --topk 2 --lengths 2x512 --warmup 1 --repeats 3}
  load_args=${MOBA_LOAD_ARGS:---backend cpu --slots 1 --dtype fp16 --heads 2/2 --head-dim 32 --chunk 64 --topk 2 --lengths 1x256 --warmup 0 --repeats 1000000 --allow-slow}
  sweep_args=${MOBA_SWEEP_ARGS:---dtype fp16 --heads 4/2 --topk 1,3 --mixes boundary:2,single:3,uniform:4:1-300}
  gen_args=${MOBA_GEN_ARGS:---lengths uniform:32:64-600 --heads 4/2 --head-dim 32 --partitions 8}
  score_args=${MOBA_SCORE_ARGS:---chunk 64 --topk 2 --no-write-outputs}
  gen_master='local[2]'; gen_xmx=2g; load_xmx=1g
else
  c=$((host_cores / n)); [ "$c" -gt 8 ] && c=8; [ "$c" -lt 1 ] && c=1
  cores=${MOBA_EXECUTOR_CORES:-$c}
  m=$((host_mem_gb * 6 / 10 / n)); [ "$m" -gt 32 ] && m=32; [ "$m" -lt 4 ] && m=4
  mem_gb=${MOBA_EXECUTOR_MEMORY_GB:-$m}
  driver_mem=8g
  bench_args=${MOBA_BENCH_ARGS:---dtype fp16 --heads 16/16 --head-dim 128 --chunk 128 --topk 8 --lengths 2x65536 --tokens-per-batch 131072 --warmup 2 --repeats 10}
  # The load: 4 tasks on the last GPU, each MoBA with one 64K chunk (attention over the whole causal prefix, the
  # dense kernel's path) so the GPU computes most of the time rather than waiting on host copies.
  load_args=${MOBA_LOAD_ARGS:---backend cuda --slots 4 --dtype fp16 --heads 16/16 --head-dim 128 --chunk 65536 --topk 1 --lengths 2x65536 --tokens-per-batch 131072 --warmup 0 --repeats 1000000}
  sweep_args=${MOBA_SWEEP_ARGS:-}
  # ~0.68 M tokens (160 sequences of 256..8192 tokens, H16/Hkv4, D128, bf16: ~4 GB of Parquet) in 40 files. With
  # one task per GPU, score is bound by each task's host work (Parquet decode, metrics; about 10 K tokens/s from
  # docs/perf.md's H100 numbers), so score-1 takes about a minute.
  gen_args=${MOBA_GEN_ARGS:---lengths uniform:160:256-8192 --heads 16/4 --head-dim 128 --dtype bf16 --partitions 40}
  score_args=${MOBA_SCORE_ARGS:---chunk 512 --topk 3 --no-write-outputs}
  gen_c=$host_cores; [ "$gen_c" -gt 16 ] && gen_c=16
  gen_master="local[$gen_c]"; gen_xmx=32g; load_xmx=32g
fi
all_cores=$((n * cores))
java -version 2>&1 | head -1
say "host: $host_cores cores, $host_mem_gb GB; $n executor(s) x $cores cores x ${mem_gb} GB, backend $backend"

# --- A Spark home the worker can launch executors from --------------------------------------------------------
# Executors run `$JAVA_HOME/bin/java -cp <spark.executor.extraClassPath>:$SPARK_HOME/conf:$SPARK_HOME/jars/* ...`:
# jars/ gets links to the jars of MOBA_CP, the project's class folders (and moba-* jars) go on extraClassPath.
sh=$work/spark-home
mkdir -p "$sh/jars" "$sh/conf"
app_cp=""
IFS=: read -r -a entries <<< "$MOBA_CP"
for e in "${entries[@]}"; do
  [ -n "$e" ] && [ -e "$e" ] || continue
  b=$(basename "$e")
  if [ -d "$e" ] || [[ "$b" == moba-*.jar ]] || [[ "$e" != *.jar ]]; then
    app_cp=${app_cp:+$app_cp:}$e
  else
    case "$b" in
      hadoop-client-minicluster*|junit-*|opentest4j*|apiguardian*) ;;   # test-only jars stay off the cluster
      *) [ -e "$sh/jars/$b" ] || ln -s "$e" "$sh/jars/$b" ;;
    esac
  fi
done
# Netty's jars carry a JarIndex (META-INF/INDEX.LIST) naming directories as packages; jars without directory entries
# (the packed ones) then fail its check, and Java 17 throws InvalidJarIndexError for classes looked up through them
# (seen starting the master on a class path in another order than MOBA_CP's). The index is only a lookup shortcut:
# those jars get a copy without it.
python3 - "$sh/jars" <<'PY' || { echo "could not rewrite the jars with a JarIndex" >&2; exit 2; }
import os, sys, zipfile
folder = sys.argv[1]
for name in sorted(os.listdir(folder)):
    link = os.path.join(folder, name)
    with zipfile.ZipFile(link) as z:
        if "META-INF/INDEX.LIST" not in z.namelist():
            continue
        with zipfile.ZipFile(link + ".tmp", "w") as out:
            for info in z.infolist():
                if info.filename != "META-INF/INDEX.LIST":
                    out.writestr(info, z.read(info.filename))
    os.unlink(link)
    os.rename(link + ".tmp", link)
PY
core_jar=$(ls "$sh"/jars/spark-core_*.jar 2>/dev/null | head -1)
scala=$(basename "$core_jar" | sed -n 's/^spark-core_\([0-9.]*\)-.*/\1/p')
export SPARK_HOME=$sh SPARK_SCALA_VERSION=${scala:-2.13}
say "SPARK_HOME $sh: $(ls "$sh/jars" | wc -l) jars (Scala $SPARK_SCALA_VERSION); executor extraClassPath: $app_cp"
# The master's and worker's web UIs cannot be turned off (Master and Worker always bind them) and look up the
# folder org/apache/spark/ui/static as a class-path resource, which the packed jars (no directory entries) lack:
# put that folder, with Spark's static files, on their class path.
ui=$work/ui-static
mkdir -p "$ui/org/apache/spark/ui/static"
python3 - "$core_jar" "$ui" <<'PY' || say "note: could not extract Spark's UI files; the UIs run unstyled"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("org/apache/spark/ui/static/") and not name.endswith("/"):
            z.extract(name, sys.argv[2])
PY
daemon_cp="$ui:$sh/jars/*"
# Spark adds --add-modules=jdk.incubator.vector to every executor's JVM options, and a runtime without that module
# (the packed, jlink'ed one) refuses to start: "Module jdk.incubator.vector not found", every executor exits 1 and
# the worker relaunches them forever. Then the worker gets a JAVA_HOME whose bin/java drops that one option.
real_java_home=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
worker_java_home=$real_java_home
if ! "$real_java_home/bin/java" --list-modules 2>/dev/null | grep -q '^jdk.incubator.vector'; then
  worker_java_home=$work/java-home
  mkdir -p "$worker_java_home/bin"
  cat > "$worker_java_home/bin/java" <<WRAP
#!/usr/bin/env bash
# Written by gpu-standalone-run.sh: the runtime in $real_java_home lacks jdk.incubator.vector.
args=()
for a in "\$@"; do [ "\$a" = --add-modules=jdk.incubator.vector ] || args+=("\$a"); done
exec "$real_java_home/bin/java" "\${args[@]}"
WRAP
  chmod +x "$worker_java_home/bin/java"
  say "the runtime lacks jdk.incubator.vector: executors start through $worker_java_home/bin/java, which drops it"
fi

# --- Master and worker -----------------------------------------------------------------------------------------
wait_for() { # FILE PATTERN SECONDS PID
  local i
  for ((i = 0; i < $3 * 2; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
# shellcheck disable=SC2086
java $MOBA_JAVA_OPTS -Xmx1g -cp "$daemon_cp" -Dspark.ui.enabled=false \
    org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port 0 > "$logs/master.log" 2>&1 &
master_pid=$!; pids+=("$master_pid")
if ! wait_for "$logs/master.log" "I have been elected leader" 60 "$master_pid"; then
  echo "the standalone master did not start; its log:" >&2; tail -n 40 "$logs/master.log" >&2; exit 2
fi
# shellcheck disable=SC2086
JAVA_HOME=$worker_java_home java $MOBA_JAVA_OPTS -Xmx1g -cp "$daemon_cp" -Dspark.ui.enabled=false \
    -Dspark.worker.resource.gpu.amount="$n" -Dspark.worker.resource.gpu.discoveryScript="$disc" \
    org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores "$all_cores" --memory "$((n * mem_gb))g" \
    --work-dir "$work/worker" --webui-port 0 "spark://127.0.0.1:$port" > "$logs/worker.log" 2>&1 &
worker_pid=$!; pids+=("$worker_pid")
if ! wait_for "$logs/worker.log" "Successfully registered with master" 60 "$worker_pid"; then
  echo "the standalone worker did not register; its log:" >&2; tail -n 40 "$logs/worker.log" >&2; exit 2
fi
say "standalone master spark://127.0.0.1:$port and worker up: $(grep -o 'Starting Spark worker.*' "$logs/worker.log" | head -1)"
grep -i "resource\|gpu" "$logs/worker.log" | grep -v "^\s*at " | head -5

# --- Steps -----------------------------------------------------------------------------------------------------
: > "$work/steps.txt"
step() { # NAME CAP_SECONDS COMMAND...: runs it under the remaining budget, logs it, records exit and wall
  local name=$1 cap=$2; shift 2
  local left=$((deadline - (SECONDS - t_start) - 25))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -lt 15 ]; then
    say "$name: SKIPPED (time budget spent)"; echo "$name skipped 0" >> "$work/steps.txt"; status=1; return
  fi
  say "$name: starting (limit ${cap}s)"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout -k 10 "$cap" "$@" > "$logs/$name.log" 2>&1; rc=$?
  t1=$(date +%s.%N)
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  echo "$name $rc $wall" >> "$work/steps.txt"
  if [ "$rc" = 0 ]; then
    say "$name: exit 0, wall $wall s"
  else
    [ "$rc" = 124 ] && say "$name: TIMED OUT after $cap s" || say "$name: FAILED, exit $rc, wall $wall s"
    tail -n 30 "$logs/$name.log"; status=1
    local ex
    ex=$(ls -t "$work"/worker/app-*/*/stderr 2>/dev/null | head -1)
    [ -n "$ex" ] && { echo "-- the newest executor log, $ex:"; grep -v '^\s*at ' "$ex" | tail -n 15; }
  fi
}
log_conf=-Dlog4j.configurationFile=$root/conf/log4j2.properties
log_file=-Dmoba.log=$logs/moba-spark.log   # full traces of failed jobs
standalone() { # TASK_GPU_AMOUNT CORES_MAX: the driver command of a job on the standalone cluster, in array $cmd
  # shellcheck disable=SC2206
  cmd=(java $MOBA_JAVA_OPTS "-Xmx$driver_mem" "$log_conf" "$log_file" -cp "$MOBA_CP"
    "-Dspark.master=spark://127.0.0.1:$port" -Dspark.ui.enabled=false -Dspark.ui.showConsoleProgress=false
    -Dspark.driver.host=127.0.0.1
    "-Dspark.executor.cores=$cores" "-Dspark.executor.memory=${mem_gb}g" "-Dspark.cores.max=$2"
    -Dspark.executor.resource.gpu.amount=1 "-Dspark.task.resource.gpu.amount=$1"
    -Dspark.scheduler.minRegisteredResourcesRatio=1.0 -Dspark.scheduler.maxRegisteredResourcesWaitingTime=60s
    "-Dspark.executor.extraClassPath=$app_cp" -Dspark.executorEnv.CUDA_DEVICE_ORDER=PCI_BUS_ID
    org.moba.job.MobaCli)
}
local_mode() { # MASTER XMX: a job in local mode (no GPU scheduling), in array $cmd
  # shellcheck disable=SC2206
  cmd=(java $MOBA_JAVA_OPTS "-Xmx$2" "$log_conf" "$log_file" -cp "$MOBA_CP" "-Dspark.master=$1" -Dspark.ui.enabled=false
    -Dspark.ui.showConsoleProgress=false org.moba.job.MobaCli)
}

# (a) bench on every GPU
standalone 1 "$all_cores"
# shellcheck disable=SC2086
step bench 200 "${cmd[@]}" bench --backend "$backend" $bench_args --out "$work/bench"

# The load on the last GPU starts now; the dataset is generated while it ramps up.
load_gpu=$((n - 1))
start_load() {
  local_mode 'local[4]' "$load_xmx"
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES=$load_gpu "${cmd[@]}" bench $load_args --out "$work/load" --overwrite > "$logs/load$1.log" 2>&1 &
  load_pid=$!; pids+=("$load_pid")
  say "load on GPU $load_gpu started (pid $load_pid, log load$1.log)"
}
load_pid=""
[ "$n" -ge 2 ] || [ "$fake" -gt 0 ] && start_load ""

# (c, first half) the score dataset, in local mode on the CPU
local_mode "$gen_master" "$gen_xmx"
# shellcheck disable=SC2086
step gen 150 "${cmd[@]}" gen $gen_args --out "$work/in"

# (a, second half) bench again while the last GPU is loaded
if [ -n "$load_pid" ]; then
  busy=0
  for ((i = 0; i < 30; i++)); do
    if ! kill -0 "$load_pid" 2>/dev/null; then
      say "the load process exited early; its log:"; tail -n 15 "$logs"/load*.log
      if [ "$fake" -eq 0 ] && [ -z "${MOBA_LOAD_ARGS:-}" ] && [ ! -e "$logs/load-fallback.log" ]; then
        # Fall back to the FlashMoBA shape itself, known to run.
        load_args="--backend cuda --slots 6 --dtype fp16 --heads 16/16 --head-dim 128 --chunk 128 --topk 8"
        load_args="$load_args --lengths 2x65536 --tokens-per-batch 131072 --warmup 0 --repeats 1000000"
        start_load "-fallback"; continue
      fi
      break
    fi
    if [ "$fake" -gt 0 ]; then sleep 3; busy=3; break; fi
    u=$(nvidia-smi -i "$load_gpu" --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null | tr -d ' ')
    if [ "${u:-0}" -ge 75 ] 2>/dev/null; then busy=$((busy + 1)); else busy=0; fi
    [ "$busy" -ge 3 ] && break
    sleep 2
  done
  say "load on GPU $load_gpu: utilization $( [ "$fake" -gt 0 ] && echo fake || nvidia-smi -i "$load_gpu" --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  standalone 1 "$all_cores"
  # shellcheck disable=SC2086
  step bench-load 200 "${cmd[@]}" bench --backend "$backend" $bench_args --out "$work/bench-load"
  kill "$load_pid" 2>/dev/null; wait "$load_pid" 2>/dev/null
  say "load stopped"
else
  say "bench-load: SKIPPED (one GPU: nothing to straggle behind)"; echo "bench-load skipped 0" >> "$work/steps.txt"
fi

# (b) sweep
standalone 1 "$all_cores"
# shellcheck disable=SC2086
step sweep 120 "${cmd[@]}" sweep --backend "$backend" $sweep_args --out "$work/sweep"

# (c) score on one executor (one GPU), then on all
standalone 1 "$cores"
# shellcheck disable=SC2086
step score-1 200 "${cmd[@]}" score --backend "$backend" --input "$work/in" $score_args --out "$work/score-1"
standalone 1 "$all_cores"
# shellcheck disable=SC2086
step score-all 150 "${cmd[@]}" score --backend "$backend" --input "$work/in" $score_args --out "$work/score-all"

# (d) two tasks per GPU
standalone 0.5 "$all_cores"
# shellcheck disable=SC2086
step score-half 150 "${cmd[@]}" score --backend "$backend" --input "$work/in" $score_args --out "$work/score-half"

# --- Summary ---------------------------------------------------------------------------------------------------
kill "$worker_pid" 2>/dev/null; sleep 2
python3 "$here/standalone-table.py" "$work" "$n" "$load_gpu" "$fake" | tee "$out/summary.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
say "total wall $((SECONDS - t_start)) s; exit status $status" | tee -a "$out/summary.txt"
(cd "$work" && tar czf "$out/results.tar.gz" --exclude='*.parquet' --exclude='in' --exclude='*.jar' \
    --exclude='spark-home' --exclude='ui-static' --exclude='load' . 2>/dev/null)
ls -la "$out"
exit $status
