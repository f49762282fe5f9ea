"""Helpers of bench/gpu_check.sh: the out-of-memory row check, the resumed-grid comparison, and
the summary of every step's targets.

    python bench/gpu_check.py oom OUT_DIR            # the back-off row of a train benchmark
    python bench/gpu_check.py compare DIR_A DIR_B    # the CSVs of two runs of one grid
    python bench/gpu_check.py telemetry WORK_DIR     # bench/latency.sh's rows: percentiles, telemetry
    python bench/gpu_check.py summary RESULTS_DIR    # met / missed per target; writes summary.txt

Standard library only, so that it runs before anything is installed.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

# Benchmark columns that are measured, so differ from run to run; every other column (model,
# sizes, batch, counts, status, backend, error) must be equal between two runs of a grid. The
# steps and repeats are measured too: a timed loop is repeated only when its first run was short.
MEASURED = re.compile(r"(samples_per_sec|step_time|step_time_p\d+|peak_memory_mib|compile_s|_mean|_median|_repeats|_pct|"
                      r"^repeats|^steps|_ms|_queries|_mhz|_mhz_min|power_w|temperature_c|_mj|throttled)$")
TELEMETRY = ("clock_mhz", "memory_clock_mhz", "power_w", "temperature_c", "energy_per_image_mj", "throttled")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def oom(out: Path) -> int:
    """Print the train benchmark row of `out` and whether it backed off, with its peak memory."""
    files = sorted((out / "detailed").glob("benchmark-*.csv"))
    if not files:
        print(f"oom: no detailed benchmark file in {out}")
        return 1
    rows = [row for path in files for row in read_rows(path)]
    ok = True
    for row in rows:
        kind = "train" if "train_batch_size" in row else "infer"
        batch = row.get(f"{kind}_batch_size") or "-"
        backed_off = row.get("status") == "backoff" and batch != "-" and int(batch) < int(row["batch_asked"])
        peak = row.get("peak_memory_mib") or "-"
        ok &= backed_off
        print(f"oom: model={row['model']} backend={row.get('backend')} status={row.get('status')} "
              f"batch_asked={row.get('batch_asked')} batch={batch} samples_per_sec={row.get(f'{kind}_samples_per_sec') or '-'} "
              f"peak_memory_mib={peak} error={row.get('error') or '-'}")
    print(f"oom_backoff={'yes' if ok and rows else 'no'} peak_memory_mib={rows[0].get('peak_memory_mib') or '-'}")
    return 0 if ok and rows else 1


def _comparable(path: Path) -> list[tuple]:
    rows = read_rows(path)
    if path.name.startswith("benchmark-"):
        rows = [{k: v for k, v in row.items() if not MEASURED.search(k)} for row in rows]
    return sorted(tuple(sorted(row.items())) for row in rows)


# Scores that are averages of floating-point log-probabilities (calibration, logit differences)
# change in their last digits between two processes on a GPU: cuDNN's autotuner may choose other
# kernels, whose fp16 sums round differently (about 1e-4 of a log-probability, 1e-7 of an average
# over the images). Between two runs such a file must agree within this relative difference;
# the results files (counts of right answers) stay byte for byte.
FLOAT_RTOL = 1e-5


def _close(pa: Path, pb: Path) -> float | None:
    """The largest relative difference of two CSVs that are equal but for their floats, else None."""
    ra, rb = read_rows(pa), read_rows(pb)
    if len(ra) != len(rb) or (ra and ra[0].keys() != rb[0].keys()):
        return None
    worst = 0.0
    for x, y in zip(ra, rb):
        for column, u in x.items():
            v = y[column]
            if u == v:
                continue
            try:
                fu, fv = float(u), float(v)
            except ValueError:
                return None
            worst = max(worst, abs(fu - fv) / max(abs(fu), abs(fv)))
    return worst


def compare(a: Path, b: Path) -> int:
    """Every CSV of `a` against `b`: results and metadata files byte for byte, benchmark files
    row for row without their measured columns, files of averaged scores (metrics, conformance)
    byte for byte or within `FLOAT_RTOL`. Prints each file's verdict, then `resume_equal=`."""
    names = sorted({p.relative_to(a) for p in a.rglob("*.csv") if "store" not in p.parts}
                   | {p.relative_to(b) for p in b.rglob("*.csv") if "store" not in p.parts})
    equal = bool(names)
    for name in names:
        pa, pb = a / name, b / name
        if not (pa.is_file() and pb.is_file()):
            verdict = f"only in {a if pa.is_file() else b}"
        elif name.name.startswith("benchmark-"):
            verdict = "equal (measured columns left out)" if _comparable(pa) == _comparable(pb) else "DIFFERENT"
        elif pa.read_bytes() == pb.read_bytes():
            verdict = "equal (byte for byte)"
        elif name.name.startswith(("metrics-", "conformance-")) and (worst := _close(pa, pb)) is not None:
            verdict = (f"equal within {FLOAT_RTOL:g} (largest relative difference {worst:.1e})" if worst <= FLOAT_RTOL
                       else f"DIFFERENT (largest relative difference {worst:.1e})")
        else:
            verdict = "DIFFERENT"
        equal &= verdict.startswith("equal")
        print(f"compare: {name}: {verdict}")
    print(f"resume_equal={'yes' if equal else 'no'} files={len(names)}")
    return 0 if equal else 1


def telemetry(work: Path) -> int:
    """The latency and throughput rows of bench/latency.sh's `work` folder: percentiles in order,
    and the telemetry columns. Prints each row, then `percentiles_ordered=` and `telemetry_filled=`."""
    ordered = filled = True
    files = sorted(work.glob("*/detailed/benchmark-*.csv"))
    for path in files:
        for row in read_rows(path):
            values = " ".join(f"{c}={row.get(c) or '-'}" for c in TELEMETRY)
            print(f"telemetry: {path.name} {row['model']} {values}")
            filled &= all(row.get(c) for c in TELEMETRY)
            if row.get("latency_p50_ms"):
                p50, p90, p99 = (float(row[f"latency_p{p}_ms"]) for p in (50, 90, 99))
                ordered &= p50 <= p90 <= p99
                print(f"latency: {row['model']} p50={p50} p90={p90} p99={p99} mean={row['latency_mean_ms']}")
    print(f"percentiles_ordered={'yes' if ordered and files else 'no'} telemetry_filled={'yes' if filled and files else 'no'}")
    return 0 if ordered and files else 1


# The summary --------------------------------------------------------------------------------

def _values(text: str) -> dict[str, str]:
    """Every `key=value` of a log (the last one of each key wins)."""
    return dict(re.findall(r"\b([a-z_0-9]+)=(\S+)", text))


def _number(values: dict[str, str], key: str) -> float | None:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def summary(results: Path) -> int:
    dry = (results / "mode.txt").read_text().strip() == "dry-run" if (results / "mode.txt").is_file() else False
    steps = {}
    if (results / "steps.tsv").is_file():
        for line in (results / "steps.tsv").read_text().splitlines():
            name, rc, seconds, limit = line.split("\t")
            steps[name] = (int(rc), float(seconds), float(limit))
    logs = {name: (results / f"{name}.log").read_text(errors="replace") if (results / f"{name}.log").is_file() else ""
            for name in steps}
    rows: list[tuple[str, str, str, str]] = []  # step, target, measured, verdict

    def target(step: str, text: str, measured: str, met: bool | None, gpu_only: bool = False) -> None:
        if step not in steps:
            return
        rc, seconds, limit = steps[step]
        if dry and gpu_only:
            verdict = "n/a (dry run)"
        elif met is None:
            verdict = "missed (not measured" + (f": stopped at its {limit:.0f} s limit)" if rc in (124, 137) else ")")
        else:
            verdict = "met" if met else "missed"
        rows.append((step, text, measured, verdict))

    def ran(step: str) -> str:
        rc, seconds, limit = steps[step]
        return f"rc {rc}" + (f", stopped at {limit:.0f} s" if rc in (124, 137) else "")

    for step in steps:
        log, rc = logs[step], steps[step][0]
        v = _values(log)
        if step == "install":
            target(step, "polars from the wheels, rbench importable, offline build", 
                   f"polars {v.get('polars', '-')}, rbench {v.get('rbench', '-')}, build {v.get('build', '-')}",
                   v.get("polars", "-") != "-" and v.get("rbench", "-") != "-" and v.get("build") == "ok")
            target(step, "cuda backends available", f"cuda={v.get('cuda', '-')}", v.get("cuda") == "yes", gpu_only=True)
        elif step == "tests":
            passed = re.findall(r"^=*\s*((?:\d+ \w+, )*\d+ \w+ in [\d.]+s)", log, re.M)
            target(step, "oracle, ImageNet fixture and backend tests pass", passed[-1] if passed else ran(step),
                   rc == 0 if passed else None)
        elif step == "logits":
            measured = f"min_agreement={v.get('min_agreement', '-')} worst_rel_diff={v.get('worst_rel_diff', '-')}"
            target(step, "each stack within its precision's tolerance, no decisive top-1 change", measured,
                   None if "logits_ok" not in v else v["logits_ok"] == "yes")
        elif step == "throughput":
            lo, sweep, speedup = (_number(v, k) for k in ("min_ratio", "sweep_ratio", "compile_speedup"))
            versus = re.findall(r"rbench/timm (\d+\.\d+)\)", log)
            versus_x = float(versus[-1]) if versus else None
            partial = "" if rc == 0 else f" ({ran(step)}, partial)"
            target(step, "rbench/timm samples/s >= 0.98 on every row", f"min_ratio={v.get('min_ratio', '-')}{partial}",
                   None if lo is None else lo >= 0.98 and rc == 0, gpu_only=True)
            target(step, "each sweep's wall time <= 0.5 of timm's", f"sweep_ratio={v.get('sweep_ratio', '-')}{partial}",
                   None if sweep is None else sweep <= 0.5 and rc == 0, gpu_only=True)
            target(step, "+compile >= 1.5x eager (resnet50 amp nhwc)", f"compile_speedup={v.get('compile_speedup', '-')}",
                   None if speedup is None else speedup >= 1.5, gpu_only=True)
            target(step, "+compile within 5% of timm's --torchcompile", f"rbench/timm={versus[-1] if versus else '-'}",
                   None if versus_x is None else versus_x >= 0.95, gpu_only=True)
            if dry:
                target(step, "the report has every number (dry run)",
                       f"min_ratio={v.get('min_ratio', '-')} sweep_ratio={v.get('sweep_ratio', '-')} "
                       f"compile_speedup={v.get('compile_speedup', '-')} rbench/timm={versus[-1] if versus else '-'}",
                       rc == 0 and None not in (lo, sweep, speedup, versus_x))
        elif step == "latency":
            target(step, "latency percentiles written, p50 <= p90 <= p99", f"percentiles_ordered={v.get('percentiles_ordered', '-')}",
                   None if "percentiles_ordered" not in v else v["percentiles_ordered"] == "yes")
            mean = _number(v, "mean_vs_timm")
            target(step, "timm-comparable (mean-based) samples/s within 2% of timm's", f"mean_vs_timm={v.get('mean_vs_timm', '-')} "
                   f"median_vs_timm={v.get('median_vs_timm', '-')}", None if mean is None else abs(mean - 1) <= 0.02,
                   gpu_only=True)
            target(step, "NVML telemetry in every detailed row (clocks, power, temperature, energy, throttling)",
                   f"telemetry_filled={v.get('telemetry_filled', '-')}",
                   None if "telemetry_filled" not in v else v["telemetry_filled"] == "yes", gpu_only=True)
        elif step == "validate":
            identical = re.search(r"(?:logits|predictions) identical: (yes|NO)", log)
            same_top1 = re.search(r"the same top-1 for every image: (yes|NO)", log)
            measured = identical.group(1) if identical else "-"
            if same_top1:
                measured += f", same top-1: {same_top1.group(1)}"
            target(step, "cold, warm and uncached passes give the same logits (top-1 on a GPU)", measured,
                   None if identical is None else identical.group(1) == "yes" or bool(same_top1 and same_top1.group(1) == "yes"))
            warm, cold = _number(v, "warm_vs_model"), _number(v, "cold_vs_timm")
            target(step, "warm-cache end-to-end >= 0.9 of the model alone", f"warm_vs_model={v.get('warm_vs_model', '-')}",
                   None if warm is None else warm >= 0.9, gpu_only=True)
            target(step, "cold pass >= timm's loader", f"cold_vs_timm={v.get('cold_vs_timm', '-')}",
                   None if cold is None else cold >= 1.0, gpu_only=True)
        elif step == "oom":
            row = re.findall(r"^oom: (.*)$", log, re.M)
            fields = _values(row[-1]) if row else {}
            target(step, "a batch that does not fit backs off; the row says so",
                   f"status={fields.get('status', '-')} batch {fields.get('batch_asked', '-')} -> {fields.get('batch', '-')}",
                   None if "oom_backoff" not in v else v["oom_backoff"] == "yes")
            peak = v.get("peak_memory_mib", "-")
            target(step, "peak memory reported", f"peak_memory_mib={peak}", None if not row else peak != "-", gpu_only=True)
        elif step == "resume":
            target(step, "killed with -9 mid-grid, resumed: CSVs equal an uninterrupted run's",
                   f"cells done at the kill: {v.get('done_at_kill', '-')}/{v.get('cells', '-')}, "
                   f"{v.get('files', '-')} CSV files compared",
                   None if "resume_equal" not in v else v["resume_equal"] == "yes" and v.get("killed_mid_run") == "yes")

    header = (results / "environment.txt").read_text().strip() if (results / "environment.txt").is_file() else ""
    width = [max(len(r[i]) for r in rows + [("step", "target", "measured", "verdict")]) for i in range(3)]
    lines = [f"gpu_check summary ({'dry run on the CPU' if dry else 'GPU run'})", header, "",
             f"{'step':<{width[0]}}  {'seconds':>7}  {'target':<{width[1]}}  {'measured':<{width[2]}}  verdict"]
    shown = set()
    for step, text, measured, verdict in rows:
        seconds = f"{steps[step][1]:.0f}" if step not in shown else ""
        lines.append(f"{step if step not in shown else '':<{width[0]}}  {seconds:>7}  {text:<{width[1]}}  "
                     f"{measured:<{width[2]}}  {verdict}")
        shown.add(step)
    met = sum(r[3] == "met" for r in rows)
    missed = sum(r[3].startswith("missed") for r in rows)
    na = sum(r[3].startswith("n/a") for r in rows)
    total = sum(s[1] for s in steps.values())
    lines += ["", f"targets: {met} met, {missed} missed" + (f", {na} n/a (GPU-only, dry run)" if na else "")
              + f"; steps took {total:.0f} s"]
    text = "\n".join(line for line in lines if line is not None)
    (results / "summary.txt").write_text(text + "\n")
    print(text)
    return 0 if missed == 0 and rows else 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "oom":
        return oom(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "compare":
        return compare(Path(argv[1]), Path(argv[2]))
    if len(argv) == 2 and argv[0] == "telemetry":
        return telemetry(Path(argv[1]))
    if len(argv) == 2 and argv[0] == "summary":
        return summary(Path(argv[1]))
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
