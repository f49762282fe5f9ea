"""Errors a user can cause: each prints one line (what, where, what to do) and exits 2.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class RbenchError(Exception):
    """Base class of every error a user can cause and fix; the CLI prints it and exits 2."""

    exit_code = 2


class PluginError(RbenchError):
    """A plugin failed to load, or two plugins provide the same name."""


class UnknownNameError(RbenchError):
    """A model, data set, backend or metric name that nothing provides."""


class UnavailableError(RbenchError):
    """A backend that exists but cannot run on this machine."""


class DataError(RbenchError):
    """A data folder that is missing, malformed or incomplete."""


class WeightsError(RbenchError):
    """Weights that cannot be found or loaded safely."""


class ExportError(Exception):
    """A backend could not convert a model for its runtime (the exporter's reason, one line).

    Not the user's to fix with an option, so not an `RbenchError`: that model's cell fails
    with status `export-failed` (a `failures.csv` row) and the grid goes on.
    """

    status = "export-failed"


def one_line(exc: BaseException) -> str:
    """`Type: message`, the whole message on one line (its hint is often at the end): whitespace
    collapsed, nothing cut. Screens shorten it; files keep it."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def first_few(names: Sequence[str], shown: int = 3, quoted: bool = False) -> str:
    """The first `shown` of `names` (as `repr` when `quoted`), then `and N more`: a list that keeps
    an error message to one readable line."""
    head = [repr(n) if quoted else str(n) for n in names[:shown]]
    return ", ".join(head) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def unknown_name(kind: str, name: str, known: Iterable[str], hint: str) -> UnknownNameError:
    """An `UnknownNameError` for `name` that lists the closest known names."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    suggestion = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
    return UnknownNameError(f"unknown {kind} {name!r}{suggestion} See `{hint}`.")
