"""A cell and its record: what a finished cell produced, and what produced it.

`Cell` is one unit of work (its identity, and the key that hashes it). `CellRecord` is the
typed, versioned record of a finished cell that the store keeps as `records/<key>.json`: the
cell, its status and failure message, its provenance (versions, host, time), and its output:
the predictions file of a validation cell (name, SHA-256, rows) with the listing of its source
and the model's columns, or the benchmark and metadata rows (`Entry`). `CellRecord.from_json`
checks the whole record and raises `RecordError`, saying what is wrong; records of the previous
version (2) are read into the same type.

Nothing here imports torch, timm or polars at module level.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import DataError

RECORD_VERSION = 3
READABLE_VERSIONS = (2, RECORD_VERSION)  # version 2 records are converted on reading (`_from_v2`)
# Columns of stored rows that must hold a number (or nothing): what the reports compute with.
NUMERIC_SUFFIXES = ("_samples_per_sec", "_step_time", "_batch_size", "param_count", "top1", "top5")


def cell_key(identity: Mapping[str, Any]) -> str:
    """A short stable hash of everything that identifies a cell."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def versions() -> dict[str, Any]:
    """Versions that change results: they go into every cell's key, and every record's provenance."""
    import timm
    import torch

    from . import __version__

    return {"rbench": __version__, "torch": torch.__version__, "timm": timm.__version__}


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One unit of work. `identity` holds everything that changes its result; `key` hashes it."""

    kind: str  # validate, infer, train, latency, metadata
    model: str
    source: str | None = None
    backend: str | None = None
    device: str = "cpu"
    weights: str | None = None  # what the model loads: `pretrained`, `random` or a checkpoint path
    name: str | None = None  # the `model` column of its rows (`models.row_name`); None in older records
    # What the cell reserves on a Ray cluster: its backend stack's declaration (`BackendSpec.ray_resources`).
    ray_resources: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    identity: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        return cell_key(self.identity)

    @property
    def label(self) -> str:
        where = " on ".join(filter(None, [self.source, self.backend]))
        against = f" against {self.identity['reference']}" if "reference" in self.identity else ""
        return f"{self.kind} {self.model}" + (f" on {where}" if where else "") + against

    @property
    def reference(self) -> str | None:
        """The reference stack a non-reference stack's validation cell is compared with, else None."""
        return self.identity.get("reference")

    @property
    def keeps_scores(self) -> bool:
        """Whether this validation cell keeps each sample's full scores (`--keep scores`), not
        only the compact predictions. Only such a cell has `keep` in its identity, so compact
        cells keep the keys they always had."""
        return self.identity.get("keep") == "scores"

    def keeping_scores(self) -> Cell:
        """This validation cell keeping full scores: its file has every compact column too."""
        return replace(self, identity={**self.identity, "keep": "scores"})

    @property
    def views(self) -> tuple[str, ...]:
        """The views of a validation cell's source, as planned (empty for other kinds)."""
        return tuple(self.identity.get("views") or ()) if self.kind == "validate" else ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "source": self.source, "backend": self.backend,
                "device": self.device, "weights": self.weights, "name": self.name,
                "ray_resources": self.ray_resources, "identity": self.identity}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cell:
        return cls(**data)


class RecordError(DataError):
    """A record file that is not a record this rbench can use; the message says what is wrong."""


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """What produced a record: the versions that ran the cell, the host, when it ended, how long
    it took (None where not known: records of version 2 have no host or time)."""

    rbench: str | None = None
    torch: str | None = None
    timm: str | None = None
    host: str | None = None
    finished: str | None = None  # ISO 8601, local time with its offset
    seconds: float | None = None

    @classmethod
    def here(cls, seconds: float | None = None) -> Provenance:
        """This process's versions and host, finished now."""
        return cls(**versions(), host=socket.gethostname(), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   seconds=seconds)


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A stored row and the table it goes to: `benchmark` (with its `kind` and the stack's file
    `tag`) or `metadata`."""

    table: str
    row: Mapping[str, Any]
    kind: str | None = None
    tag: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as `results.Results.add` takes it (and as the record file holds it)."""
        return {"table": self.table, **({"kind": self.kind, "tag": self.tag} if self.table == "benchmark" else {}),
                "row": dict(self.row)}


@dataclass(frozen=True, kw_only=True)
class PredictionsFile:
    """A validation cell's predictions file: its name in the store, SHA-256 and number of rows."""

    file: str  # predictions/<key>.parquet
    sha256: str
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "rows": self.rows}


@dataclass(frozen=True, kw_only=True)
class CellRecord:
    """The record of a finished cell, ok or failed.

    A validation cell that ran has `predictions`, its source's `source_listing`, and `common`:
    the columns its rows share (model, img_size, param_count, crop_pct, interpolation,
    weights); `partial` (the data set ran with `--allow-partial`) and the images that could not
    be read. A benchmark or metadata cell has its rows as `entries` (a failed benchmark keeps its
    failed row). A failure has its `status` and `message` (and the `traceback` of an error).
    """

    cell: Cell
    status: str = "ok"
    message: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    entries: tuple[Entry, ...] = ()
    predictions: PredictionsFile | None = None
    source_listing: str | None = None
    common: Mapping[str, Any] | None = None
    partial: bool = False
    unreadable: tuple[str, ...] = ()
    traceback: str | None = None

    @property
    def key(self) -> str:
        return self.cell.key

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": RECORD_VERSION, "key": self.key, "cell": self.cell.to_json(), "status": self.status,
            "message": self.message, "provenance": vars(self.provenance).copy(),
            "entries": [e.to_json() for e in self.entries],
            "predictions": self.predictions.to_json() if self.predictions else None,
            "source_listing": self.source_listing, "common": dict(self.common) if self.common is not None else None,
            "partial": self.partial, "unreadable": list(self.unreadable), "traceback": self.traceback,
        }
        return data

    @classmethod
    def from_json(cls, data: Any, key: str | None = None) -> CellRecord:
        """The record in `data` (a record file's JSON; `key`: its file name's stem), checked whole;
        a `RecordError` that says what is wrong. A record of version 2 is converted."""
        if not isinstance(data, dict):
            raise RecordError("not a JSON object")
        version = data.get("version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise RecordError(f"record version {version!r}, not {RECORD_VERSION} (written by another rbench)")
        if version == 2:
            data = _from_v2(data)
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise RecordError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        cell = _cell(data.get("cell"))
        if data.get("key") != cell.key or (key is not None and key != cell.key):
            raise RecordError("its key or cell does not match its file name")
        _check(data, "status", str)
        _check(data, "message", str)
        _check(data, "source_listing", str, none=True)
        _check(data, "partial", bool)
        _check(data, "traceback", str, none=True)
        unreadable = data.get("unreadable")
        if not isinstance(unreadable, list) or not all(isinstance(p, str) for p in unreadable):
            raise RecordError("'unreadable' is not a list of paths")
        predictions = _predictions(data.get("predictions"))
        common = data.get("common")
        if common is not None:
            _check_common(common)
        if predictions is not None and (common is None or data.get("source_listing") is None):
            raise RecordError("a record with 'predictions' lacks 'common' or 'source_listing'")
        return cls(cell=cell, status=data["status"], message=data["message"],
                   provenance=_provenance(data.get("provenance")), entries=_entries(data.get("entries")),
                   predictions=predictions, source_listing=data["source_listing"], common=common,
                   partial=data["partial"], unreadable=tuple(unreadable), traceback=data["traceback"])


_FIELDS = {"version", "key", "cell", "status", "message", "provenance", "entries", "predictions", "source_listing",
           "common", "partial", "unreadable", "traceback"}


def _from_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A version 2 record as version 3 data. Version 2 kept the cell's identity as `cell` and the
    cell itself (without it) as `cell_info` (absent from records written by hand, such as a
    benchmark's store: then the cell is taken from its identity); the versions in its identity
    and its `seconds` become its provenance."""
    data = dict(data)
    identity = data.pop("cell", None)
    info = data.pop("cell_info", None)
    if not isinstance(identity, dict):
        raise RecordError("its key or cell does not match its file name")
    if isinstance(info, dict):
        cell = {"weights": None, "name": None, **info, "identity": identity}
    else:
        cell = {"kind": identity.get("kind"), "model": identity.get("model"), "source": identity.get("source"),
                "backend": identity.get("backend"), "device": "cpu", "weights": None, "name": None,
                "ray_resources": {}, "identity": identity}
    data["cell"] = cell
    data["provenance"] = {"rbench": identity.get("rbench"), "torch": identity.get("torch"),
                          "timm": identity.get("timm"), "host": None, "finished": None,
                          "seconds": data.pop("seconds", None)}
    data["version"] = RECORD_VERSION
    data.setdefault("status", "ok")
    data.setdefault("message", "")
    for name, default in (("predictions", None), ("source_listing", None), ("common", None), ("partial", False),
                          ("unreadable", []), ("traceback", None)):
        data.setdefault(name, default)
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(data: Mapping[str, Any], name: str, kind: type, none: bool = False) -> None:
    value = data.get(name)
    if (value is None and none) or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return
    raise RecordError(f"{name!r} is {value!r}, not a {kind.__name__}" + (" or null" if none else ""))


def _cell(data: Any) -> Cell:
    if not isinstance(data, dict) or set(data) != {"kind", "model", "source", "backend", "device", "weights", "name",
                                                    "ray_resources", "identity"}:
        raise RecordError("'cell' is not a {kind, model, source, backend, device, weights, name, ray_resources, "
                          "identity} object")
    for name in ("kind", "model", "device"):
        _check(data, name, str)
    for name in ("source", "backend", "weights", "name"):
        _check(data, name, str, none=True)
    resources = data["ray_resources"]
    if not isinstance(resources, dict) or not all(_is_number(v) for v in resources.values()):
        raise RecordError("the cell's 'ray_resources' is not an object of numbers")
    if not isinstance(data["identity"], dict):
        raise RecordError("the cell's 'identity' is not an object")
    return Cell.from_json(data)


def _provenance(data: Any) -> Provenance:
    names = ("rbench", "torch", "timm", "host", "finished", "seconds")
    if not isinstance(data, dict) or set(data) != set(names):
        raise RecordError(f"'provenance' is not a {{{', '.join(names)}}} object")
    for name in names[:-1]:
        _check(data, name, str, none=True)
    if data["seconds"] is not None and not _is_number(data["seconds"]):
        raise RecordError(f"'seconds' is {data['seconds']!r}, not a number")
    return Provenance(**data)


def _entries(data: Any) -> tuple[Entry, ...]:
    if not isinstance(data, list):
        raise RecordError("'entries' is not a list")
    entries = []
    for entry in data:
        if not isinstance(entry, dict) or entry.get("table") not in ("benchmark", "metadata") \
                or not isinstance(entry.get("row"), dict):
            raise RecordError("an entry is not a {table, row} object of the benchmark or metadata table")
        if entry["table"] == "benchmark" and not (isinstance(entry.get("kind"), str) and isinstance(entry.get("tag"), str)):
            raise RecordError("a benchmark entry lacks its 'kind' or 'tag'")
        if set(entry) - {"table", "kind", "tag", "row"}:
            raise RecordError(f"an entry has unknown field(s) {sorted(set(entry) - {'table', 'kind', 'tag', 'row'})}")
        row = entry["row"]
        if not isinstance(row.get("model"), str):
            raise RecordError(f"a {entry['table']} row's 'model' is {row.get('model')!r}, not a name")
        _check_numbers(row)
        entries.append(Entry(table=entry["table"], row=row, kind=entry.get("kind"), tag=entry.get("tag")))
    return tuple(entries)


def _check_numbers(row: Mapping[str, Any]) -> None:
    for column, value in row.items():
        if column.endswith(NUMERIC_SUFFIXES) and value is not None and not _is_number(value):
            raise RecordError(f"{column!r} is {value!r}, not a number")


def _predictions(data: Any) -> PredictionsFile | None:
    if data is None:
        return None
    if not (isinstance(data, dict) and set(data) == {"file", "sha256", "rows"} and isinstance(data["file"], str)
            and isinstance(data["sha256"], str) and isinstance(data["rows"], int) and not isinstance(data["rows"], bool)):
        raise RecordError("'predictions' is not a {file, sha256, rows} object")
    return PredictionsFile(**data)


COMMON_TYPES = {"model": str, "img_size": int, "param_count": float, "crop_pct": float, "interpolation": str,
                "weights": str}


def _check_common(common: Any) -> None:
    """The columns a validation cell's rows share: each known one of its type (a number where a
    float is named); others (a newer rbench's) are left as they are."""
    if not isinstance(common, dict):
        raise RecordError("'common' is not an object")
    for name, kind in COMMON_TYPES.items():
        value = common.get(name)
        if name == "weights" and value is None:
            continue  # a store written by hand may leave it out
        good = _is_number(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)
        if not good:
            raise RecordError(f"'common' {name!r} is {value!r}, not {'a number' if kind is float else 'a ' + kind.__name__}")
