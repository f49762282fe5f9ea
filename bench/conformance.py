"""Conformance and speed of the backends outside PyTorch (`onnxruntime`, `openvino`) against `cpu`.

    python bench/conformance.py [--work DIR] [--models M1,M2,...] [--batch-size N]

1. `rbench check-backend onnxruntime` and `rbench check-backend openvino`: their verdicts, exit
   statuses and wall times (target: PASS, exit 0, about a minute each on a small CPU).
2. One `rbench run -b cpu,onnxruntime,openvino --bench validate,infer` of the tiny models
   (random weights, the synthetic data): its conformance-synthetic.csv, and per model the
   infer samples/s of each backend with its ratio to cpu and the export time (compile_s).

Prints markdown tables (for bench/RESULTS.md), then one line:

    check=<PASS|FAIL> worst_agreement=<percent> worst_logit_diff=<x> onnxruntime_speed=<ratio> openvino_speed=<ratio>

the speeds being the lowest per-model infer samples/s ratio of each runtime to cpu.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNTIMES = ("onnxruntime", "openvino")


def rbench(*args: str) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rbench", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep every run's files here [default: a temporary folder]")
    parser.add_argument("--models", default="test_vit,test_efficientnet,test_byobnet")
    parser.add_argument("--batch-size", default="32")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rbench-conformance-"))

    print("## check-backend\n")
    print("| stack | model | top1_agreement | logit_absdiff_max | logit_absdiff_mean | pass | exit | wall s |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    verdicts, lines, agreements, diffs = [], [], [], []
    for runtime in RUNTIMES:
        code, output, wall = rbench("check-backend", runtime, "--out", str(work / f"check-{runtime}"))
        verdicts.append(code == 0)
        lines.append(next((line for line in output.splitlines() if line.startswith(f"{runtime}: ")), "(no verdict)"))
        for row in rows(work / f"check-{runtime}" / "conformance-synthetic.csv"):
            agreements.append(float(row["top1_agreement"]))
            diffs.append(float(row["logit_absdiff_max"]))
            print(f"| {runtime} | {row['model']} | {float(row['top1_agreement']):.2f} | {float(row['logit_absdiff_max']):.2e} "
                  f"| {float(row['logit_absdiff_mean']):.2e} | {row['pass']} | {code} | {wall:.0f} |")
    print("\n" + "\n".join(f"    {line}" for line in lines) + "\n")

    out = work / "run"
    code, output, wall = rbench("run", "-m", args.models, "-b", ",".join(("cpu", *RUNTIMES)), "--bench", "validate,infer",
                                "--weights", "random", "--batch-size", args.batch_size, "--warmup-steps", "3",
                                "--bench-steps", "20", "--bench-seconds", "2", "--out", str(out))
    if code != 0:
        print(output[-3000:])
        raise SystemExit(f"the rbench run failed (exit {code})")
    print(f"## rbench run -b cpu,{','.join(RUNTIMES)} --bench validate,infer ({wall:.0f} s)\n")
    print("| model | stack | top1 | reference_top1 | top1_agreement | logit_absdiff_max | logit_absdiff_mean | pass |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows(out / "conformance-synthetic.csv"):
        agreements.append(float(row["top1_agreement"]))
        diffs.append(float(row["logit_absdiff_max"]))
        print(f"| {row['model']} | {row['stack']} | {float(row['top1']):.3f} | {float(row['reference_top1']):.3f} "
              f"| {float(row['top1_agreement']):.2f} | {float(row['logit_absdiff_max']):.2e} "
              f"| {float(row['logit_absdiff_mean']):.2e} | {row['pass']} |")
    speed = {}
    for path in sorted((out / "detailed").glob("benchmark-infer-*.csv")):
        stack = next((r for r in RUNTIMES if path.stem.endswith(r)), "cpu")
        for row in rows(path):
            speed[(row["model"], stack)] = (float(row["infer_samples_per_sec"]), row["compile_s"])
    print("\n| model | batch | cpu samples/s | " + " | ".join(f"{r} samples/s | ratio | export s" for r in RUNTIMES) + " |")
    print("| --- | ---: | ---: |" + " ---: | ---: | ---: |" * len(RUNTIMES))
    worst = {r: float("inf") for r in RUNTIMES}
    for model in sorted({m for m, _ in speed}):
        base = speed[(model, "cpu")][0]
        cells = []
        for runtime in RUNTIMES:
            rate, export = speed[(model, runtime)]
            worst[runtime] = min(worst[runtime], rate / base)
            cells.append(f"{rate:,.1f} | {rate / base:.2f} | {float(export):.2f}")
        print(f"| {model} | {args.batch_size} | {base:,.1f} | " + " | ".join(cells) + " |")
    print(f"\ncheck={'PASS' if all(verdicts) else 'FAIL'} worst_agreement={min(agreements):.2f} "
          f"worst_logit_diff={max(diffs):.2e} " + " ".join(f"{r}_speed={worst[r]:.2f}" for r in RUNTIMES))


if __name__ == "__main__":
    main()
