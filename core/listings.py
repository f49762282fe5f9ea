"""Source listings as plain data: a `Source` to a JSON document and back.

A store may be shared, so anything in it may have been written by someone else: a listing
holds only data, and reading one runs no code. The callables a source carries (a view's
`score`, the source's `sample_transform`) are kept by name, with their attributes as JSON
data, and are rebuilt only from the package of the data set plugin that made the source (the
package of its `DatasetSpec.load`), without calling `__init__`.

    {"format": "rbench-source-listing", "version": 1, "name", "root", "partial", "note", "identity",
     "files": [path, ...], "sample_files": [index into files, ...], "sample_labels": [label, ...],
     "views": [{"name", "samples", "labels", "classes", "columns", "score"}, ...],
     "sample_transform": null | {"function": "module:name"} | {"class": "module:name", "state": {...}},
     "build": null | {"folder", "slices": [[name, first, end], ...], "tasks", "make", "setup" (callables as
               above), "group", "workers", "files", "about", "label"},
     "keep_scores": true (only when the source keeps full scores),
     "border": pixels (only when the source crops a border before the resize)}

A label is an int or a list of ints (a label set); a file listed several times (virtual
samples) is written once.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from .errors import DataError, PluginError
from .specs import Source, SourceBuild, ViewSpec

FORMAT = "rbench-source-listing"
VERSION = 1
_SOURCE_FIELDS = {"name", "root", "samples", "views", "partial", "note", "sample_transform", "identity", "build",
                  "keep_scores", "border"}
_BUILD_FIELDS = {"folder", "slices", "tasks", "make", "setup", "group", "workers", "files", "about", "label"}
_VIEW_FIELDS = {"name", "samples", "labels", "classes", "score", "columns"}


class ListingError(DataError):
    """A source listing that cannot be used: missing, damaged, named outside the store, or
    written by an older rbench as a pickle (never loaded: loading one could run code)."""


def plugin_package(registry, name: str) -> str | None:
    """The package whose code a listing of source `name` may name: that of the data set
    plugin's `load` (the module itself for a one-module plugin); None when no data set of
    that name is loaded."""
    spec = registry.datasets.get(name) if registry is not None else None
    module = getattr(getattr(spec, "load", None), "__module__", None)
    if not module:
        return None
    return module.rpartition(".")[0] or module


def _inside(module: str, package: str | None) -> bool:
    return package is not None and (module == package or module.startswith(package + "."))


# --- to data ------------------------------------------------------------------------------

def _label(label: Any) -> int | list[int]:
    return int(label) if isinstance(label, Integral) else [int(c) for c in label]


def _ints(values) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def _plain(value: Any, where: str) -> Any:
    """`value` as JSON data (tuples become lists), or a `PluginError` naming `where`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, (list, tuple, range)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise PluginError(f"{where} is a {type(value).__name__}; a listing keeps only JSON data (numbers, strings, "
                      "lists, dicts with string keys, None)")


def _callable(value: Any, where: str, package: str | None) -> dict[str, Any] | None:
    """A source's callable by name (and its attributes), or a `PluginError` saying what it must be."""
    if value is None:
        return None
    function = isinstance(value, types.FunctionType)
    owner = value if function else type(value)
    module, name = owner.__module__, owner.__qualname__
    rule = ("must be a module-level function, or an instance of a module-level class whose attributes are JSON "
            "data, defined in the data set plugin's package")
    if not name.isidentifier():
        raise PluginError(f"{where} is {module}.{name}, not module-level; it {rule}")
    if not _inside(module, package):
        home = package or "none: no data set of that name is loaded"
        raise PluginError(f"{where} is {module}.{name}, outside the data set plugin's package ({home}); it {rule}")
    if function:
        return {"function": f"{module}:{name}"}
    try:
        state = vars(value)
    except TypeError:
        raise PluginError(f"{where} is a {module}.{name} without a __dict__ (__slots__?); it {rule}") from None
    return {"class": f"{module}:{name}", "state": _plain(state, f"{where}.{name}")}


def to_data(source: Source, package: str | None) -> dict[str, Any]:
    """A source as JSON data; `package` is where its callables may come from (`plugin_package`)."""
    assert {f.name for f in dataclasses.fields(Source)} == _SOURCE_FIELDS, "a Source field the listing does not keep"
    assert {f.name for f in dataclasses.fields(ViewSpec)} == _VIEW_FIELDS, "a ViewSpec field the listing does not keep"
    where = f"data set {source.name}:"
    files: dict[str, int] = {}
    sample_files = [files.setdefault(str(path), len(files)) for path, _ in source.samples]
    views = [{"name": view.name, "samples": _ints(view.samples),
              "labels": None if view.labels is None else [_label(label) for label in view.labels],
              "classes": _ints(view.classes),
              "columns": None if view.columns is None else [str(c) for c in view.columns],
              "score": _callable(view.score, f"{where} the score of view {view.name}", package)}
             for view in source.views]
    return {"format": FORMAT, "version": VERSION, "name": source.name, "root": str(source.root),
            "partial": bool(source.partial), "note": str(source.note), "identity": str(source.identity),
            "files": list(files), "sample_files": sample_files,
            "sample_labels": [_label(label) for _, label in source.samples], "views": views,
            "sample_transform": _callable(source.sample_transform, f"{where} its sample_transform", package),
            "build": _build_data(source.build, f"{where} its build", package),
            # Only when set: the listings of sources that keep compact predictions stay as they were.
            **({"keep_scores": True} if source.keep_scores else {}),
            **({"border": int(source.border)} if source.border else {})}


def _build_data(build: SourceBuild | None, where: str, package: str | None) -> dict[str, Any] | None:
    assert {f.name for f in dataclasses.fields(SourceBuild)} == _BUILD_FIELDS, "a SourceBuild field the listing does not keep"
    if build is None:
        return None
    return {"folder": str(build.folder), "slices": [[str(n), int(a), int(b)] for n, a, b in build.slices],
            "tasks": _callable(build.tasks, f"{where}'s tasks", package),
            "make": _callable(build.make, f"{where}'s make", package),
            "setup": _callable(build.setup, f"{where}'s setup", package),
            "group": int(build.group), "workers": None if build.workers is None else int(build.workers),
            "files": [str(f) for f in build.files], "about": _plain(dict(build.about), f"{where}'s about"),
            "label": str(build.label)}


# --- from data ----------------------------------------------------------------------------

def _rebuild(ref: Mapping[str, Any], package: str | None) -> Callable:
    """A callable that `_callable` wrote, from the data set plugin's own package only."""
    kind = "function" if "function" in ref else "class"
    module_name, _, name = ref[kind].partition(":")
    if not _inside(module_name, package) or not name.isidentifier():
        raise ValueError(f"it names {ref[kind]!r}, outside the data set plugin's package ({package or 'not loaded'})")
    found = getattr(importlib.import_module(module_name), name, None)
    if kind == "function":
        if not (isinstance(found, types.FunctionType) and found.__module__ == module_name and found.__qualname__ == name):
            raise ValueError(f"{ref[kind]!r} is not a function defined there")
        return found
    if not (isinstance(found, type) and found.__module__ == module_name and found.__qualname__ == name):
        raise ValueError(f"{ref[kind]!r} is not a class defined there")
    state = ref["state"]
    if not isinstance(state, dict):
        raise ValueError("its state is not an object")
    instance = object.__new__(found)  # no __init__: the attributes are the state
    instance.__dict__.update(state)
    return instance


def _label_of(label: Any) -> int | tuple[int, ...]:
    if type(label) is int:
        return label
    if isinstance(label, list) and all(type(c) is int for c in label):
        return tuple(label)
    raise ValueError(f"a label is {label!r}")


def _int_list(values: Any) -> list[int] | None:
    if values is not None and not (isinstance(values, list) and all(type(v) is int for v in values)):
        raise ValueError("a view's samples or classes are not a list of ints")
    return values


def from_data(data: Any, registry) -> Source:
    """The `Source` of a listing's JSON data. Raises `ValueError`, `KeyError`, `TypeError` or
    `IndexError` for data that is not a listing (the store names the file)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a source listing")
    if data.get("version") != VERSION:
        raise ValueError(f"listing version {data.get('version')!r}, not {VERSION} (written by another rbench)")
    package = plugin_package(registry, data["name"])

    def rebuilt(ref):
        return None if ref is None else _rebuild(ref, package)

    files = [str(f) for f in data["files"]]
    samples = [(files[i], _label_of(label)) for i, label in zip(data["sample_files"], data["sample_labels"], strict=True)]
    views = [ViewSpec(name=str(v["name"]), samples=_int_list(v["samples"]),
                      labels=None if v["labels"] is None else [_label_of(label) for label in v["labels"]],
                      classes=_int_list(v["classes"]), columns=None if v["columns"] is None else tuple(map(str, v["columns"])),
                      score=rebuilt(v["score"])) for v in data["views"]]
    build = data.get("build")  # absent from the listings of an rbench that built in the plan
    if build is not None:
        slices = [(str(n), int(a), int(b)) for n, a, b in build["slices"]]
        build = SourceBuild(folder=Path(build["folder"]), slices=slices, tasks=rebuilt(build["tasks"]),
                            make=rebuilt(build["make"]), setup=rebuilt(build["setup"]), group=int(build["group"]),
                            workers=None if build["workers"] is None else int(build["workers"]),
                            files=tuple(map(str, build["files"])), about=dict(build["about"]), label=str(build["label"]))
    return Source(name=str(data["name"]), root=Path(data["root"]), samples=samples, views=views,
                  partial=bool(data["partial"]), note=str(data["note"]), identity=str(data["identity"]),
                  sample_transform=rebuilt(data["sample_transform"]), build=build,
                  keep_scores=data.get("keep_scores") is True, border=int(data.get("border", 0)))
