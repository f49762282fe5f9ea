"""Normalising a view's rows by a model of the same store: the `reference_model` report option
of imagenet-c (mCE, relative mCE) and imagenet-p (mFR, mT5D).

The option is applied when a report is written (`DatasetSpec.report_options`), from the rows
that the stored predictions give, so the reference model can be validated before or after the
others: the cells' keys never depend on it. Only `rbench`'s public API is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import rbench

OPTION = "reference_model"


def option_help(columns: str, instead: str) -> str:
    """The description of the option for a data set whose `columns` it normalises."""
    return (f"NAME: normalise {columns} by the model NAME of the same store (its `model` column) instead of "
            f"{instead}; applied when reporting, so `rbench report` takes it too")


def reference_rows(request: rbench.ReportRequest, dataset: str, columns: str) -> tuple[str, dict[int, Mapping[str, Any]],
                                                                                       list[str]]:
    """`(name, its rows by image size, notes)` of the reference model named by the request's
    option. With none: a `DataError` on a final report (`rbench report`), else a note saying that
    `columns` stay empty until it has a row."""
    name = request.options[OPTION].strip()
    found = {row["img_size"]: row for row in request.rows if row.get("model") == name}
    if found:
        return name, found, []
    if request.final:
        others = sorted({str(row.get("model")) for row in request.rows})
        has = (f"; models with a row: {', '.join(others[:5])}" + (", ..." if len(others) > 5 else "")) if others else ""
        raise rbench.DataError(f"--data-option {dataset}.{OPTION}={name}: the store {request.store} has no "
                               f"{request.view} row of {name}; validate it on {dataset} into that store, or name a "
                               f"model that has one{has}")
    return name, found, [f"{request.view}: {columns} are empty until {name} ({dataset}.{OPTION}) has a row"]


def reference_for(found: Mapping[int, Mapping[str, Any]], row: Mapping[str, Any], name: str, dataset: str,
                  columns: str, notes: list[str]) -> Mapping[str, Any] | None:
    """The reference row that normalises `row`: the reference's row at the same image size, else
    its only row; None when it has rows at several other sizes (with a note, in `notes`, that
    the row's `columns` are empty)."""
    if row["img_size"] in found:
        return found[row["img_size"]]
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        notes.append(f"{dataset}: {row['model']} at {row['img_size']} px has no row of {name} at its size to "
                     f"normalise by; its {columns} are empty")
    return None


def shared_runs(row: Mapping[str, Any], ref: Mapping[str, Any], runs: Sequence[Any], column: Callable[[Any], str],
                what: str, name: str, dataset: str, columns: str, notes: list[str]) -> list[Any]:
    """Of `runs` (corruption-severities, perturbations), those that `row` ran (a value in its
    `column(run)`) and the reference row `ref` ran too; a note in `notes` when the row ran others,
    since its `columns` are then over fewer `what` than it ran."""
    ran = [run for run in runs if row.get(column(run)) is not None]
    shared = [run for run in ran if ref.get(column(run)) is not None]
    if len(shared) < len(ran):
        notes.append(f"{dataset}: {columns} of {row['model']} are over the {len(shared)} of its {len(ran)} "
                     f"{what} that {name} ran too")
    return shared


def number(value: Any) -> float:
    """A row's value as a float: NaN when missing."""
    return float(value) if value is not None else math.nan


def mean(values: list[float]) -> float:
    """The mean, NaN for none (a NaN among them stays NaN)."""
    return sum(values) / len(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    """`a / b`, NaN when `b` is 0."""
    return a / b if b else math.nan
