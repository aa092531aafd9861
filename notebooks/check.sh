#!/usr/bin/env bash
# Runs the jobs small on the CPU backend, executes every notebook headless against their outputs (failing on any
# cell error), then opens each job's HTML report in headless Chromium (failing on console errors, network fetches,
# a missing or undecodable chart, or an empty table) and saves a screenshot of each.
#
#   notebooks/check.sh [OUT]        OUT defaults to target/notebooks (the notebooks' default results folder)
#
# Needs: Debian's python3-pandas python3-matplotlib python3-nbconvert python3-ipykernel and chromium; Node.js + npm
# (playwright-core is installed from notebooks/browser/package-lock.json on first use).
# Leaves: OUT/results/{bench,sweep,in,score-cC-kK}/  job outputs (the notebooks read these by default)
#         OUT/executed/*.ipynb                       the executed notebooks, with their plots
#         OUT/screenshots/*-report.png               one full-page screenshot per HTML report
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=$(mkdir -p "${1:-$root/target/notebooks}" && cd "${1:-$root/target/notebooks}" && pwd)
results="$out/results"
python=${PYTHON:-/usr/bin/python3}   # Debian's python, where the packages are (not a pyenv shim on the PATH)
start=$SECONDS
step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - start)); }

rm -rf "$results" "$out/executed" "$out/screenshots"
mkdir -p "$results" "$out/executed" "$out/screenshots"
logs="$out/logs"
mkdir -p "$logs"

failed=0
job() { # job NAME ARGS...: runs ./submit.sh quietly, printing the end of its log only when it fails
  local name=$1 rc=0; shift
  "$root/submit.sh" "$@" >"$logs/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "check.sh: ./submit.sh $* failed (exit $rc); the end of its log:" >&2
    tail -n 40 "$logs/$name.log" >&2
    return "$rc"
  fi
  tail -n 1 "$logs/$name.log" | tr '\r' '\n' | tail -n 1
}

step "jobs, small, on the CPU backend (logs in $logs)"
job bench bench --backend cpu --out "$results/bench" --heads 4/2 --lengths 2x128,2x256,1x512,1x1024 \
    --warmup 1 --repeats 3
# sweep exits 1 when a configuration fails the oracle: its outputs are complete, so the notebooks still run (and
# show the failures), but check.sh fails at the end.
rc=0
job sweep sweep --backend cpu --out "$results/sweep" --heads 4/2 --mixes boundary:2,single:3,uniform:4:1-300 || rc=$?
case $rc in 0) ;; 1) failed=1 ;; *) exit "$rc" ;; esac
job gen gen --out "$results/in" --lengths uniform:16:50-600 --heads 4/2
for chunk in 64 128; do
  for topk in 1 3; do
    job "score-c$chunk-k$topk" score --input "$results/in" --backend cpu --chunk "$chunk" --topk "$topk" \
        --out "$results/score-c$chunk-k$topk"
  done
done

# The console carries the job's own lines only: Spark's INFO lines (or log4j failing to read conf/log4j2.properties)
# there mean the logging setup broke, and the traces that belong in the log file went nowhere.
if grep -lE "Reconfiguration failed|Using Spark's default log4j profile|^[0-9]{2}/[0-9]{2}/[0-9]{2} [0-9:]{8} INFO " \
    "$logs"/*.log >&2; then
  echo "check.sh: the jobs above printed Spark's own log lines on the console (conf/log4j2.properties not in use)" >&2
  failed=1
fi

step "notebooks, executed headless"
export MOBA_RESULTS="$results" PYDEVD_DISABLE_FILE_VALIDATION=1
for nb in "$here"/*.ipynb; do
  name=$(basename "$nb")
  # A cell error makes nbconvert exit non-zero (no --allow-errors).
  if "$python" -Xfrozen_modules=off -m nbconvert --to notebook --execute --ExecutePreprocessor.timeout=300 \
      --output-dir "$out/executed" "$nb" >"$logs/nbconvert-$name.log" 2>&1; then
    echo "ok   $name -> $out/executed/$name"
  else
    echo "FAIL $name:"; tail -n 30 "$logs/nbconvert-$name.log"; failed=1
  fi
done

step "HTML reports in headless Chromium"
if [ ! -d "$here/browser/node_modules/playwright-core" ]; then
  (cd "$here/browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
node "$here/browser/check-reports.mjs" "$out/screenshots" "$results/bench/bench-report.html" \
    "$results/sweep/sweep-report.html" "$results/score-c128-k3/score-report.html" || failed=1

step "done"
if [ "$failed" -ne 0 ]; then
  echo "check.sh: FAILED (executed notebooks in $out/executed, screenshots in $out/screenshots)"
  exit 1
fi
echo "check.sh: all notebooks ran and all reports rendered; screenshots in $out/screenshots"
