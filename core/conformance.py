"""Accuracy conformance: what each backend stack changes in a model's answers, against the
reference stack (the first given with `-b`), on the same images.

A non-reference stack's validation cell runs the reference model beside its own on the same
inputs and stores each sample's logit differences (`predictions.REFERENCE_FIELDS`); the top-1
agreement pairs its stored top-1 classes with the reference cell's. Everything here is computed
from the store, so `rbench report` rebuilds `conformance-<view>.csv`.

The pass rule is MLPerf's: a stack passes when its top-1 is at least `PASS_RATIO` of the
reference's. `rbench check-backend` runs tiny models with random weights, whose top-1 is at
chance on real labels, so it also asks the same of the agreement: the stack's top-1 measured
against the reference's own predictions as labels (reference top-1 100%) must reach `PASS_RATIO`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

PASS_RATIO = 0.99  # MLPerf: at least 99% of the reference (FP32) top-1
CHECK_MODELS = ("test_vit.r160_in1k", "test_efficientnet.r160_in1k")  # `rbench check-backend`'s built-in set
CHECK_REFERENCE = "cpu"
CHECK_DATASET = "synthetic"

COLUMNS = ("model", "img_size", "stack", "reference", "top1", "reference_top1", "top1_delta", "top1_agreement",
           "logit_absdiff_max", "logit_absdiff_mean", "images", "pass")


def passes(top1: float | None, reference_top1: float | None) -> bool | None:
    """MLPerf's rule: `top1 >= PASS_RATIO * reference_top1`; None when either is unknown."""
    if top1 is None or reference_top1 is None:
        return None
    return top1 >= PASS_RATIO * reference_top1


def agreement(row: Mapping[str, Any], reference_row: Mapping[str, Any]) -> tuple[float | None, int]:
    """`(percent of the images both rows scored with the same top-1 class, how many images)`."""
    import numpy as np

    from .scoring import TOP1

    if row.get(TOP1) is None or reference_row.get(TOP1) is None:
        return None, 0
    (indices, top1), (reference_indices, reference_top1) = row[TOP1], reference_row[TOP1]
    _, mine, theirs = np.intersect1d(indices, reference_indices, assume_unique=True, return_indices=True)
    if not len(mine):
        return None, 0
    return 100.0 * float((top1[mine] == reference_top1[theirs]).mean()), len(mine)


def conformance_rows(rows: Sequence[Mapping[str, Any]], candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row of `conformance-<view>.csv` per non-reference stack's row in `rows`, against the
    row of `candidates` (the view's reference rows) of the same model, size and reference stack;
    empty reference columns where that row is missing (its cell failed). Sorted by model, size, stack."""
    by_key = {(r["model"], r["img_size"], r.get("backend")): r for r in candidates}
    found = []
    for row in rows:
        reference = by_key.get((row["model"], row["img_size"], row["reference"]))
        top1 = row.get("top1")
        reference_top1 = reference.get("top1") if reference else None
        agreed, images = agreement(row, reference) if reference else (None, 0)
        found.append({
            "model": row["model"], "img_size": row["img_size"], "stack": row["backend"],
            "reference": row["reference"], "top1": top1, "reference_top1": reference_top1,
            "top1_delta": top1 - reference_top1 if top1 is not None and reference_top1 is not None else None,
            "top1_agreement": agreed, "logit_absdiff_max": row.get("logit_absdiff_max"),
            "logit_absdiff_mean": row.get("logit_absdiff_mean"), "images": images or None,
            "pass": passes(top1, reference_top1),
        })
    return sorted(found, key=lambda r: (r["model"], r["img_size"], r["stack"]))


def conformance_table(rows: Sequence[Mapping[str, Any]]):
    """The frame of one `conformance-<view>.csv` (`conformance_rows`), at full precision."""
    import polars as pl

    schema = {c: pl.Float64 for c in COLUMNS}
    schema.update({"model": pl.String, "img_size": pl.Int64, "stack": pl.String, "reference": pl.String,
                   "images": pl.Int64, "pass": pl.Boolean})
    return pl.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], schema=schema, orient="row")


def verdict(rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> tuple[bool, str]:
    """`(passed, one line)` of `rbench check-backend`: every model has a row that passes
    MLPerf's rule and whose top-1 agreement is at least `PASS_RATIO` (in percent)."""
    threshold = 100.0 * PASS_RATIO
    problems = []
    for model in models:
        row = next((r for r in rows if r["model"] == model), None)
        if row is None or row["pass"] is None or row["top1_agreement"] is None:
            problems.append(f"{model}: no result (see failures.csv)")
        elif not row["pass"]:
            problems.append(f"{model}: top-1 {row['top1']:.3f} < {PASS_RATIO:.0%} of {row['reference_top1']:.3f}")
        elif row["top1_agreement"] < threshold:
            problems.append(f"{model}: top-1 agreement {row['top1_agreement']:.2f}% < {threshold:g}%")
    if problems:
        return False, "FAIL: " + "; ".join(problems)
    return True, (f"PASS: {len(models)} model(s) within MLPerf's rule (top-1 >= {PASS_RATIO:.0%} of the reference's) "
                  f"and top-1 agreement >= {threshold:g}%")


def check_backend(stack: str, out: Path, registry, *, workers: int = 0,
                  on_event: Callable[[dict[str, Any]], None] = lambda event: None,
                  on_start: Callable[[list, int], None] = lambda todo, done: None):
    """`(conformance rows, results)` of `stack` against `CHECK_REFERENCE` on the built-in set:
    `CHECK_MODELS` with random seeded weights, on `CHECK_DATASET`, validated into `out`."""
    from .plan import RunOptions, make_plan
    from .run import run

    options = RunOptions(models=list(CHECK_MODELS), datasets=[CHECK_DATASET], backends=[CHECK_REFERENCE, stack],
                         benches=["validate"], weights="random", out=out, batch_size=32, workers=workers,
                         executor="local", input_cache=False)
    plan = make_plan(options, registry)
    results = run(plan, registry, force=True, on_event=on_event, on_start=on_start)
    return results.conformance.get(CHECK_DATASET, []), results
