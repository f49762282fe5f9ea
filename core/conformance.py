"""Accuracy conformance: what each backend stack changes in a model's answers, against the
reference stack (the first given with `-b`), on the same images.

A non-reference stack's validation cell runs the reference model beside its own on the same
inputs and stores each sample's logit differences (`predictions.REFERENCE_FIELDS`); the top-1
agreement pairs its stored top-1 classes with the reference cell's. Everything here is computed
from the store, so `rbench report` rebuilds `conformance-<view>.csv`.

The pass rule is MLPerf's: a stack passes when its top-1 is at least `PASS_RATIO` of the
reference's. `rbench check-backend` runs tiny models with random weights, whose top-1 is at
chance on real labels and whose logits are often near-tied, so it also judges the answers
themselves, where rounding cannot excuse a change: on every *decisive* image, one whose
reference top-1 logit leads the runner-up by more than twice the precision's tolerance
(`TOLERANCE`, relative to the largest reference top-1 logit), the stack must keep the
reference's top-1. A stack whose every logit stays within that tolerance cannot change such an
image's top-1; near-ties may change and are only counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASS_RATIO = 0.99  # MLPerf: at least 99% of the reference (FP32) top-1
# Each precision's tolerance on a logit, relative to the largest reference top-1 logit: 8 times the
# unit roundoff of the narrowest format it computes in (bf16 keeps 8 significant bits; fp16 and
# TF32, which the cuda stacks allow in fp32, keep 11). Honest stacks stay well inside: bf16
# autocast on the built-in set differs by under a quarter of its tolerance.
TOLERANCE = {"fp32": 2.0**-8, "amp": 2.0**-8, "fp16": 2.0**-8, "amp_bf16": 2.0**-5, "bf16": 2.0**-5}
DEFAULT_TOLERANCE = 2.0**-5  # a precision no rule knows (a plugin's own tag): the loosest
CHECK_MODELS = ("test_vit.r160_in1k", "test_efficientnet.r160_in1k")  # `rbench check-backend`'s built-in set
CHECK_REFERENCE = "cpu"
CHECK_DATASET = "synthetic"

PAIRS = "_pairs"  # a conformance row's paired images (`pairs`); never written

COLUMNS = ("model", "img_size", "stack", "reference", "top1", "reference_top1", "top1_delta", "top1_agreement",
           "logit_absdiff_max", "logit_absdiff_mean", "images", "pass")


def passes(top1: float | None, reference_top1: float | None) -> bool | None:
    """MLPerf's rule: `top1 >= PASS_RATIO * reference_top1`; None when either is unknown."""
    if top1 is None or reference_top1 is None:
        return None
    return top1 >= PASS_RATIO * reference_top1


def tolerance(precision: str) -> float:
    """The logit tolerance of a stack of this precision tag (`TOLERANCE`, else `DEFAULT_TOLERANCE`)."""
    return TOLERANCE.get(precision, DEFAULT_TOLERANCE)


def pairs(row: Mapping[str, Any], reference_row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The images both rows scored, as numpy arrays in the row's order: `top1` (the row's top-1
    class), `reference_top1`, and the reference's `lead` (its top-1 logit minus the runner-up's)
    and `top1_logit`; None when either row has no per-sample top-1 or they share no image."""
    import numpy as np

    from .scoring import LEAD, TOP1

    if row.get(TOP1) is None or reference_row.get(TOP1) is None:
        return None
    (indices, top1), (reference_indices, reference_top1) = row[TOP1], reference_row[TOP1]
    _, mine, theirs = np.intersect1d(indices, reference_indices, assume_unique=True, return_indices=True)
    if not len(mine):
        return None
    found = {"top1": np.asarray(top1)[mine], "reference_top1": np.asarray(reference_top1)[theirs]}
    if reference_row.get(LEAD) is not None:
        lead, top1_logit = reference_row[LEAD]
        found.update(lead=np.asarray(lead)[theirs], top1_logit=np.asarray(top1_logit)[theirs])
    return found


@dataclass(frozen=True)
class Decisive:
    """How a conformance row fares on its decisive images (see the module's docstring).

    `threshold` is the reference lead a decisive image exceeds: `2 * tolerance * scale`, where
    `scale` is the largest absolute reference top-1 logit of the paired images. `logit_ratio` is
    the row's largest logit difference over `tolerance * scale` (None when not stored): below 1,
    no decisive image could have changed; how far below is the verdict's margin.
    """

    images: int
    decisive: int
    kept: int
    tolerance: float
    scale: float
    threshold: float
    logit_ratio: float | None


def decisive(row: Mapping[str, Any], tolerance: float) -> Decisive | None:
    """The decisive images of a conformance row (`conformance_rows`) at this tolerance, and how
    many kept the reference's top-1; None where the row has no paired images with leads."""
    import numpy as np

    paired = row.get(PAIRS)
    if paired is None or "lead" not in paired:
        return None
    scale = float(np.abs(paired["top1_logit"]).max())
    threshold = 2.0 * tolerance * scale
    chosen = paired["lead"] > threshold
    kept = int((paired["top1"][chosen] == paired["reference_top1"][chosen]).sum())
    largest = row.get("logit_absdiff_max")
    ratio = largest / (tolerance * scale) if largest is not None and scale > 0 else None
    return Decisive(images=len(chosen), decisive=int(chosen.sum()), kept=kept, tolerance=tolerance, scale=scale,
                    threshold=threshold, logit_ratio=ratio)


def conformance_rows(rows: Sequence[Mapping[str, Any]], candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row of `conformance-<view>.csv` per non-reference stack's row in `rows`, against the
    row of `candidates` (the view's reference rows) of the same model, size and reference stack;
    empty reference columns where that row is missing (its cell failed). Sorted by model, size, stack.
    Each row also keeps its paired images under `PAIRS` (`pairs`) for `decisive`."""
    by_key = {(r["model"], r["img_size"], r.get("backend")): r for r in candidates}
    found = []
    for row in rows:
        reference = by_key.get((row["model"], row["img_size"], row["reference"]))
        top1 = row.get("top1")
        reference_top1 = reference.get("top1") if reference else None
        paired = pairs(row, reference) if reference else None
        agreed = 100.0 * float((paired["top1"] == paired["reference_top1"]).mean()) if paired else None
        images = len(paired["top1"]) if paired else 0
        found.append({
            "model": row["model"], "img_size": row["img_size"], "stack": row["backend"],
            "reference": row["reference"], "top1": top1, "reference_top1": reference_top1,
            "top1_delta": top1 - reference_top1 if top1 is not None and reference_top1 is not None else None,
            "top1_agreement": agreed, "logit_absdiff_max": row.get("logit_absdiff_max"),
            "logit_absdiff_mean": row.get("logit_absdiff_mean"), "images": images or None,
            "pass": passes(top1, reference_top1), PAIRS: paired,
        })
    return sorted(found, key=lambda r: (r["model"], r["img_size"], r["stack"]))


def conformance_table(rows: Sequence[Mapping[str, Any]]):
    """The frame of one `conformance-<view>.csv` (`conformance_rows`), at full precision."""
    import polars as pl

    schema = {c: pl.Float64 for c in COLUMNS}
    schema.update({"model": pl.String, "img_size": pl.Int64, "stack": pl.String, "reference": pl.String,
                   "images": pl.Int64, "pass": pl.Boolean})
    return pl.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], schema=schema, orient="row")


def verdict(rows: Sequence[Mapping[str, Any]], models: Sequence[str], tolerance: float) -> tuple[bool, str]:
    """`(passed, one line)` of `rbench check-backend`: every model has a row that passes MLPerf's
    rule, has decisive images at `tolerance` (`decisive`), and keeps the reference's top-1 on
    every one of them."""
    problems = []
    for model in models:
        row = next((r for r in rows if r["model"] == model), None)
        judged = decisive(row, tolerance) if row is not None else None
        if row is None or row["pass"] is None or judged is None:
            problems.append(f"{model}: no result (see failures.csv)")
        elif not row["pass"]:
            problems.append(f"{model}: top-1 {row['top1']:.3f} < {PASS_RATIO:.0%} of {row['reference_top1']:.3f}")
        elif judged.decisive == 0:
            problems.append(f"{model}: no decisive image (every reference lead <= {judged.threshold:.3g}), "
                            "nothing to judge")
        elif judged.kept < judged.decisive:
            problems.append(f"{model}: top-1 changed on {judged.decisive - judged.kept} of {judged.decisive} "
                            f"decisive images (reference lead > {judged.threshold:.3g})")
    if problems:
        return False, "FAIL: " + "; ".join(problems)
    return True, (f"PASS: {len(models)} model(s) within MLPerf's rule (top-1 >= {PASS_RATIO:.0%} of the reference's) "
                  f"and the reference's top-1 on every decisive image (tolerance {tolerance:g})")


def describe(row: Mapping[str, Any], tolerance: float) -> str:
    """One line of `rbench check-backend` on a model's decisive images: how many, how many kept
    their top-1, the threshold, and the largest logit difference as a fraction of the tolerance."""
    judged = decisive(row, tolerance)
    if judged is None:
        return f"{row['model']}: no per-image leads"
    ratio = "-" if judged.logit_ratio is None else f"{judged.logit_ratio:.3g}"
    return (f"{row['model']}: {judged.kept} of {judged.decisive} decisive images (of {judged.images}) kept their "
            f"top-1; decisive: reference lead > {judged.threshold:.3g} = 2 x {tolerance:g} x {judged.scale:.3g} "
            f"(largest top-1 logit); largest logit difference = {ratio} x the tolerance")


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
    results = run(plan, registry, force=True, on_event=on_event, on_start=on_start).grid
    return results.conformance.get(CHECK_DATASET, []), results
