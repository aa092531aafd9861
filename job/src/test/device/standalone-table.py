#!/usr/bin/env python3
"""The closing table of gpu-standalone-run.sh: per run its exit, wall, tokens/s and the distinct
(executor id, GPU address, CUDA ordinal, PCI bus id) its output rows record, checked against nvidia-smi.

usage: standalone-table.py WORK N LOAD_GPU FAKE
Exit status 1 when a pinning check fails (a performance target missed is reported, not failed).
"""
import csv
import glob
import json
import os
import sys

work, n, load_gpu, fake = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) > 0

# name -> (output folder, CSV with one row per result, column names of executor/gpu/ordinal/bus, devices expected)
CAMEL = ("executorId", "gpuAddresses", "deviceOrdinal", "pciBusId")
SNAKE = ("executor_id", "gpu_addresses", "device_ordinal", "pci_bus_id")
RUNS = [
    ("bench", "bench.csv", CAMEL, n),
    ("gen", None, None, 0),
    ("bench-load", "bench.csv", CAMEL, n),
    ("sweep", "sweep.csv", CAMEL, n),
    ("score-1", "score-metrics.csv", SNAKE, 1),
    ("score-all", "score-metrics.csv", SNAKE, n),
    ("score-half", "score-metrics.csv", SNAKE, n),
]


def read_csv(folder):
    rows = []
    for part in sorted(glob.glob(os.path.join(folder, "part-*.csv"))):
        with open(part, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def bus(s):
    """0000:18:00.0 (CUDA) and 00000000:18:00.0 (nvidia-smi) alike."""
    parts = (s or "").strip().lower().split(":")
    if len(parts) != 3:
        return (s or "").strip().lower()
    try:
        return "%04x:%s:%s" % (int(parts[0], 16), parts[1], parts[2])
    except ValueError:
        return (s or "").strip().lower()


steps = {}
try:
    with open(os.path.join(work, "steps.txt")) as f:
        for line in f:
            name, rc, wall = line.split()
            steps[name] = (rc, float(wall))
except OSError:
    pass

smi = {}
try:
    with open(os.path.join(work, "gpus.csv")) as f:
        for i, line in enumerate(f):
            cells = [c.strip() for c in line.split(",")]
            if i > 0 and len(cells) == 2 and cells[0].isdigit():
                smi[int(cells[0])] = cells[1]
except OSError:
    pass

failed = False
notes = []
lines = []
fmt = "%-11s %-5s %7s  %-24s %-6s %s"
lines.append(fmt % ("run", "exit", "wall s", "tokens/s", "check", "devices: executor/gpu/ordinal/pci bus (rows)"))
tokens_per_s = {}
for name, table, cols, expected in RUNS:
    rc, wall = steps.get(name, ("-", float("nan")))
    if rc == "skipped" or name not in steps:
        lines.append(fmt % (name, rc if rc != "-" else "not run", "", "", "", ""))
        continue
    folder = os.path.join(work, name)
    tps = ""
    devices = ""
    check = "-"
    if table is not None:
        rows = read_csv(os.path.join(folder, table))
        problems = []
        combos = {}
        for r in rows:
            key = tuple(r.get(c) or "" for c in cols)
            combos[key] = combos.get(key, 0) + 1
        if not rows:
            problems.append("no rows")
        for (executor, gpu, ordinal, pci), count in sorted(combos.items()):
            if not executor or executor == "driver":
                problems.append("executor id '%s'" % executor)
            if not gpu:
                problems.append("no GPU address (Spark assigned none)")
            elif gpu != ordinal:
                problems.append("address %s but ordinal %s bound" % (gpu, ordinal))
            if fake:
                if pci:
                    problems.append("PCI bus id %s without a GPU" % pci)
            elif not ordinal.lstrip("-").isdigit() or int(ordinal) not in smi:
                problems.append("ordinal %s is not an nvidia-smi index" % ordinal)
            elif bus(pci) != bus(smi[int(ordinal)]):
                problems.append("ordinal %s: bus %s, nvidia-smi says %s" % (ordinal, pci, smi[int(ordinal)]))
        addresses = {k[1] for k in combos}
        executors = {}
        for (executor, gpu, _, _) in combos:
            executors.setdefault(executor, set()).add(gpu)
        if len(addresses) != expected:
            problems.append("%d distinct GPU address(es), expected %d" % (len(addresses), expected))
        if len(executors) != expected or any(len(a) != 1 for a in executors.values()):
            problems.append("executors -> addresses %s, expected %d executor(s) of one GPU each"
                            % ({e: sorted(a) for e, a in executors.items()}, expected))
        if problems:
            failed = True
            check = "FAIL"
            notes.append("%s: %s" % (name, "; ".join(sorted(set(problems)))))
        else:
            check = "ok"
        devices = "  ".join("%s/%s/%s/%s (%d)" % (k[0], k[1] or "-", k[2], k[3] or "-", c)
                            for k, c in sorted(combos.items()))
        if name.startswith("bench") and rows:
            per = sorted(rows, key=lambda r: int(r["deviceOrdinal"]))
            tps = ", ".join("%.3g" % float(r["tokensPerSecond"]) for r in per)
            medians = [float(r["mobaMedianMs"]) for r in per]
            flagged = sorted(int(r["deviceOrdinal"]) for r in per if r["straggler"].lower() == "true")
            if name == "bench":
                notes.append("bench: MoBA median ms per GPU %s, spread max/min %.3fx, stragglers %s"
                             % (", ".join("%.2f" % m for m in medians), max(medians) / min(medians), flagged))
            else:
                want = [load_gpu]
                verdict = "ok" if flagged == want else ("not checked (no GPUs)" if fake else "NOT AS EXPECTED")
                notes.append("bench-load (GPU %d loaded): MoBA median ms per GPU %s, straggler flag on %s, "
                             "expected %s: %s" % (load_gpu, ", ".join("%.2f" % m for m in medians), flagged, want,
                                                  verdict))
        if name == "sweep":
            s = read_json(os.path.join(folder, "sweep-summary.json"))
            if s:
                tps = "%d configs, %d failed" % (s.get("configurations", 0), s.get("failed", 0))
        if name.startswith("score"):
            s = read_json(os.path.join(folder, "score-summary.json"))
            if s:
                tokens_per_s[name] = s.get("tokensPerSecond", 0.0)
                tps = "%.4g (%d tok)" % (tokens_per_s[name], s.get("tokensScored", 0))
    lines.append(fmt % (name, rc, "%.1f" % wall, tps, check, devices))

print("\n".join(lines))
print("nvidia-smi: " + ("  ".join("%d=%s" % (i, b) for i, b in sorted(smi.items())) if smi else "(fake GPUs)"))
one, every, half = (tokens_per_s.get(k) for k in ("score-1", "score-all", "score-half"))
if one and every:
    target = 0.9 * n
    print("score scaling 1 -> %d GPU(s): %.4g -> %.4g tokens/s = %.2fx (target >= %.2fx): %s"
          % (n, one, every, every / one, target, "met" if every / one >= target else "MISSED"))
if every and half:
    print("score with task GPU amount 0.5 vs 1: %.4g vs %.4g tokens/s = %.2fx" % (half, every, half / every))
for note in notes:
    print(note)
print("pinning checks: " + ("FAILED" if failed else "all passed"))
sys.exit(1 if failed else 0)
