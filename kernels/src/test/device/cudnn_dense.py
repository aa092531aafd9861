#!/usr/bin/env python3
"""The best dense baseline on the GPU host: PyTorch's scaled_dot_product_attention with the cuDNN backend forced.

Causal attention on KernelBench's shapes, timed with CUDA events (warm-up, then the median of many runs over
three rotating input sets of random normal values). Sequences of one shape share a length, so a batch is one
padded-free call with batch = number of sequences ([B, H, L, D]); a mix of lengths would be one call per
sequence. Prints one line per shape and writes them as CSV to --csv (KernelBench's "x cuDNN" column reads it).

usage: python3 cudnn_dense.py [--csv FILE] [--iters N] [--backward]
"""
import argparse
import csv
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# name, sequences, length, heads, head dim, dtype: the dense counterparts of KernelBench's MoBA shapes.
SHAPES = [
    ("2x8K H16 D128 fp16", 2, 8192, 16, 128, torch.float16),
    ("2x32K H16 D128 fp16", 2, 32768, 16, 128, torch.float16),
    ("2x64K H16 D128 fp16", 2, 65536, 16, 128, torch.float16),
    ("1x32K H1 D128 bf16", 1, 32768, 1, 128, torch.bfloat16),
    ("1x64K H32 D128 bf16", 1, 65536, 32, 128, torch.bfloat16),
]


def median_ms(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", help="write the table here as CSV")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("cudnn_dense.py: no CUDA device", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    rows = []
    for name, b, length, heads, d, dtype in SHAPES:
        sets = [tuple(torch.randn(b, heads, length, d, device="cuda", dtype=dtype, requires_grad=args.backward)
                      for _ in range(3)) for _ in range(3)]
        turn = [0]

        def forward():
            q, k, v = sets[turn[0] % 3]
            turn[0] += 1
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        with torch.no_grad():
            fwd = median_ms(forward, args.iters)
        step = float("nan")
        if args.backward:
            grads = [torch.randn(b, heads, length, d, device="cuda", dtype=dtype) for _ in range(3)]

            def training():
                out = forward()
                out.backward(grads[turn[0] % 3])

            step = median_ms(training, args.iters)
        pairs = b * heads * length * (length + 1) / 2
        tflops = 4 * d * pairs / (fwd * 1e9)
        rows.append({"shape": name, "fwd_ms": f"{fwd:.4f}", "fwd_tflops": f"{tflops:.1f}", "fwd_bwd_ms": f"{step:.4f}"})
        print(f"cuDNN dense {name:24s} fwd {fwd:9.3f} ms  {tflops:6.1f} TFLOP/s  fwd+bwd {step:9.3f} ms", flush=True)
        del sets
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
