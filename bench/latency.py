"""Batch-1 latency percentiles, and timm-comparable throughput beside rbench's median figure.

Run through bench/latency.sh, which documents the options. Two rbench runs, each one
`rbench run` as a user would type it:

- `--bench latency`: each model at batch 1, one query at a time, at least --queries queries and
  --seconds seconds; the table shows mean, p50, p90, p99 (nearest rank) and samples/s;
- `--bench infer --bench-repeats R`: each model at --batch-size, the timed loop of --steps steps
  repeated R times; the table shows rbench's samples/s (`infer_samples_per_sec`: batch over the
  mean step, timm's definition), its median-based figure (`samples_per_sec_median`), each
  repeat's and their spread,
  and, with --timm PATH (timm's benchmark.py, fetched, never committed), timm's own samples/s over
  R runs of the same batch and steps, with the ratio of each rbench figure to timm's median run.

The last line is exactly `mean_vs_timm=<x> median_vs_timm=<y>` (over the models, the ratio
farthest from 1; `-` without --timm).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def rbench(*args: str, out: Path) -> Path:
    """One `rbench run` into `out`; its detailed files' folder."""
    command = [sys.executable, "-m", "rbench", "run", *args, "--weights", "random", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    (out.parent / f"{out.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        sys.exit(f"latency.py: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return out / "detailed"


def rows(folder: Path, kind: str) -> dict[str, dict[str, str]]:
    (path,) = folder.glob(f"benchmark-{kind}-*.csv")
    with path.open() as f:
        return {r["model"]: r for r in csv.DictReader(f)}


# timm benchmark.py's flags for each member of an rbench backend stack: the same precision and
# layout on both sides of the comparison.
TIMM_FLAGS = {
    "cpu": [], "cuda": [],
    "cpu-amp-bf16": ["--amp", "--amp-dtype", "bfloat16"],
    "cuda-amp": ["--amp"], "cuda-amp-bf16": ["--amp", "--amp-dtype", "bfloat16"],
    "cuda-fp16": ["--precision", "float16"], "cuda-bf16": ["--precision", "bfloat16"],
    "channels-last": ["--channels-last"], "compile": ["--torchcompile"],
}


def timm_flags(stack: str) -> list[str]:
    """timm benchmark.py's flags for `stack` (`cuda-amp+channels-last` -> `--amp --channels-last`)."""
    flags = []
    for member in stack.split("+"):
        if member not in TIMM_FLAGS:
            sys.exit(f"latency.py: no timm benchmark.py flags for the stack member {member!r} of {stack!r}")
        flags += TIMM_FLAGS[member]
    return flags


def timm_rates(script: Path, model: str, args, work: Path) -> list[float]:
    """timm's benchmark.py samples/s of `model` over `args.repeats` runs: the same batch, steps,
    precision and layout as rbench's stack."""
    found = []
    for i in range(args.repeats):
        results = work / f"timm-{model}-{i}.csv"
        command = [sys.executable, str(script), "--bench", "inference", "--device", args.device, "--model", model,
                   "-b", str(args.batch_size), "--num-warm-iter", str(args.warmup), "--num-bench-iter", str(args.steps),
                   *timm_flags(args.backend), "--results-file", str(results)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode or not results.is_file():
            sys.exit(f"latency.py: timm's benchmark.py failed on {model}:\n{done.stderr[-2000:]}")
        with results.open() as f:
            found.append(float(next(csv.DictReader(f))["infer_samples_per_sec"]))
    return found


def ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.3f}" if theirs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--backend", help="the rbench stack [default: cpu, or cuda-amp+channels-last]")
    parser.add_argument("--models", default="test_vit,resnet18")
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timm", type=Path, help="timm's benchmark.py, for its samples/s")
    parser.add_argument("--work", type=Path, help="keep the runs' files here [default: a new temp folder]")
    args = parser.parse_args()
    if args.timm and not args.timm.is_file():
        print(f"no timm benchmark.py at {args.timm}: its columns stay '-'")
        args.timm = None
    backend = args.backend = args.backend or ("cpu" if args.device == "cpu" else "cuda-amp+channels-last")
    if args.timm:
        print(f"timm's benchmark.py runs with: {' '.join(timm_flags(backend)) or '(fp32, NCHW: no flags)'}")
    work = args.work or Path(tempfile.mkdtemp(prefix="rbench-latency."))
    work.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    threads = f", OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}" if "OMP_NUM_THREADS" in os.environ else ""
    print(f"rbench latency and throughput on {backend}{threads}; work folder {work}")

    latency = rows(rbench("-m", args.models, "-b", backend, "--bench", "latency", "--warmup-steps", str(args.warmup),
                          "--latency-queries", str(args.queries), "--latency-seconds", str(args.seconds),
                          out=work / "latency"), "latency")
    print(f"\nlatency: batch 1, one query at a time, at least {args.queries} queries and {args.seconds:g} s")
    print(f"{'model':<16} {'queries':>8} {'mean ms':>9} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'samples/s':>10}")
    for model in models:
        r = latency[model]
        print(f"{model:<16} {r['latency_queries']:>8} {float(r['latency_mean_ms']):>9.3f} {float(r['latency_p50_ms']):>9.3f} "
              f"{float(r['latency_p90_ms']):>9.3f} {float(r['latency_p99_ms']):>9.3f} "
              f"{float(r['latency_samples_per_sec']):>10.2f}")

    infer = rows(rbench("-m", args.models, "-b", backend, "--bench", "infer", "--batch-size", str(args.batch_size),
                        "--warmup-steps", str(args.warmup), "--bench-steps", str(args.steps), "--bench-seconds", "0",
                        "--bench-repeats", str(args.repeats), "--no-retry", out=work / "infer"), "infer")
    print(f"\nthroughput: batch {args.batch_size}, {args.warmup} warm-up and {args.steps} timed steps, "
          f"{args.repeats} repeats (rbench) and runs (timm)")
    print(f"{'model':<16} {'median/s':>10} {'mean/s':>10} {'repeats /s':>26} {'spread%':>8} {'timm /s (runs)':>30} "
          f"{'mean/timm':>9} {'median/timm':>11}")
    mean_ratios, median_ratios = [], []
    for model in models:
        r = infer[model]
        median, mean = float(r["samples_per_sec_median"]), float(r["infer_samples_per_sec"])
        theirs = timm_rates(args.timm, model, args, work) if args.timm else []
        timm_median = statistics.median(theirs) if theirs else None
        if timm_median:
            mean_ratios.append(mean / timm_median)
            median_ratios.append(median / timm_median)
        print(f"{model:<16} {median:>10.2f} {mean:>10.2f} {r['samples_per_sec_repeats']:>26} "
              f"{r['repeat_spread_pct'] or '-':>8} {' '.join(f'{t:.2f}' for t in theirs) or '-':>30} "
              f"{ratio(mean, timm_median):>9} {ratio(median, timm_median):>11}")
    fmt = lambda values: f"{max(values, key=lambda r: abs(r - 1)):.3f}" if values else "-"  # noqa: E731
    print(f"mean_vs_timm={fmt(mean_ratios)} median_vs_timm={fmt(median_ratios)}")


if __name__ == "__main__":
    main()
