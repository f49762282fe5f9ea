"""Every field of every spec a hook returns, and of the specs those take and give, is documented
in docs/writing-plugins.md, in the section of a hook's kind that involves it (as datasette's docs
test does)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

import rbench.hookspecs
import rbench.specs

PAGE = Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md"


def spec_classes(hint) -> list[type]:
    """The dataclasses of `rbench.specs` that a type hint names, at any depth."""
    if dataclasses.is_dataclass(hint) and getattr(hint, "__module__", "") == rbench.specs.__name__:
        return [hint]
    args = hint if isinstance(hint, (list, tuple)) else typing.get_args(hint)  # a Callable's arguments are a list
    return [found for arg in args for found in spec_classes(arg)]


def reachable(root: type) -> list[type]:
    """`root` and every spec dataclass its fields' types name (the arguments and results of its callables too)."""
    found, todo = [], [root]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        hints = typing.get_type_hints(cls, vars(rbench.specs))
        todo.extend(c for f in dataclasses.fields(cls) for c in spec_classes(hints[f.name]))
    return found


def sections() -> dict[str, str]:
    """`## ` heading -> its text, subsections included."""
    parts = re.split(r"^## (.+)$", PAGE.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def hook_specs() -> dict[str, list[type]]:
    """Each hook's kind (`dataset`, from `rbench_datasets`) -> the spec dataclasses it involves."""
    kinds = {}
    for name, hook in inspect.getmembers(rbench.hookspecs, inspect.isfunction):
        if name.startswith("rbench_"):
            returned = typing.get_type_hints(hook, vars(rbench.hookspecs))["return"]
            kinds[name.removeprefix("rbench_").removesuffix("s")] = [c for root in spec_classes(returned)
                                                                     for c in reachable(root)]
    return kinds


def documented(field: str, text: str) -> bool:
    """Named as code: `field`, `field(args)`, `field=value`, `Spec.field`."""
    return re.search(rf"`(?:\w+\.)?{re.escape(field)}[`(=]", text) is not None


def test_the_specs_are_found_from_the_hooks():
    found = {c.__name__ for classes in hook_specs().values() for c in classes}
    assert {"DatasetSpec", "ViewSpec", "Source", "DataRequest", "MetricSpec", "Predictions", "BackendSpec",
            "ExecutorSpec", "ExecutorOption"} <= found


def test_every_field_of_every_hooks_specs_is_documented_in_its_section():
    """A spec two hooks involve (`ViewSpec`, `Predictions`) may document a field in either's section."""
    by_heading = sections()
    where: dict[type, list[str]] = {}
    for kind, classes in hook_specs().items():
        section = [text for heading, text in by_heading.items() if kind in heading.lower()]
        assert section, f"docs/writing-plugins.md has no section on {kind} plugins"
        for cls in classes:
            where.setdefault(cls, []).append(section[0])
    missing = [f"{cls.__name__}.{f.name}" for cls, texts in where.items() for f in dataclasses.fields(cls)
               if not any(documented(f.name, text) for text in texts)]
    assert not missing, f"not documented in docs/writing-plugins.md: {', '.join(missing)}"
