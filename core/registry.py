"""Plugin discovery: entry points -> pluggy -> one table of specs per kind.

Plugins are registered under `<group>:<entry point name>` (for example
`rbench.datasets:synthetic`), so a dataset plugin and a metric plugin with the same entry-point
name never shadow each other, and every spec is traced back to its plugin and distribution.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import DataError, PluginError, RbenchError, unknown_name
from .specs import AddedViews, BackendSpec, DatasetSpec, ExecutorOption, ExecutorSpec, MetricSpec

KINDS = {
    "datasets": ("rbench.datasets", "rbench_datasets", DatasetSpec),
    "added_views": ("rbench.datasets", "rbench_added_views", AddedViews),  # data set plugins add them
    "metrics": ("rbench.metrics", "rbench_metrics", MetricSpec),
    "backends": ("rbench.backends", "rbench_backends", BackendSpec),
    "executors": ("rbench.executors", "rbench_executors", ExecutorSpec),
}
BUILTIN_DISTRIBUTION = "rbench"
DISABLE_AUTOLOAD_ENV = "RBENCH_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class PluginInfo:
    """One registered plugin: its namespaced name, its distribution and what it provides."""

    name: str
    distribution: str
    provides: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """Every spec that the registered plugins provide, by kind and name."""

    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    added_views: dict[str, AddedViews] = field(default_factory=dict)
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    backends: dict[str, BackendSpec] = field(default_factory=dict)
    executors: dict[str, ExecutorSpec] = field(default_factory=dict)
    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Any:
        """The spec of `kind` called `name`, or an `UnknownNameError` with close matches."""
        table = getattr(self, kind)
        if name not in table:
            raise unknown_name(kind.rstrip("s"), name, table, f"rbench list {kind}")
        return table[name]

    def data_dir_dataset(self) -> str:
        """The data set whose folder `--data-dir` gives (`DatasetSpec.data_dir`)."""
        return self._declared("datasets", lambda spec: spec.data_dir, "--data-dir: no loaded data set takes a "
                              "folder of class subfolders (DatasetSpec.data_dir); give its folder with --data NAME=PATH")

    def default_dataset(self) -> str:
        """The data set validated when a run names none (`DatasetSpec.default`)."""
        return self._declared("datasets", lambda spec: spec.default, "no data set given, and no loaded data set "
                              "is the default (DatasetSpec.default); name one with -d (see `rbench list datasets`)")

    def reference_backend(self) -> str:
        """The base `rbench check-backend` compares a stack against (`BackendSpec.reference`)."""
        return self._declared("backends", lambda spec: spec.reference, "no loaded backend is the reference of "
                              "check-backend (BackendSpec.reference); see `rbench list backends`")

    def default_executor(self, benchmarks: bool) -> str:
        """The executor of a run given no `--executor` (`ExecutorSpec.default_for`): that of runs
        with benchmarks, or that of runs without."""
        purpose = "benchmarks" if benchmarks else "validation"
        return self._declared("executors", lambda spec: spec.default_for == purpose,
                              f"no loaded executor runs {purpose} by default (ExecutorSpec.default_for); "
                              "pass --executor NAME (see `rbench list executors`)")

    def executor_flags(self) -> list[tuple[ExecutorSpec, ExecutorOption]]:
        """The executor options that have a command-line option of their own (`ExecutorOption.flag`)."""
        return [(spec, option) for spec in self.executors.values() for option in spec.options if option.flag]

    def executor_options(self, name: str, given: Mapping[str, str]) -> dict[str, Any]:
        """The settings `given` to executor `name` (`--executor-option KEY=VALUE`), parsed by its
        declaration (`ExecutorSpec.options`); an `RbenchError` for a key it does not declare or a
        value it cannot take."""
        import difflib

        spec = self.get("executors", name)
        declared = {option.name: option for option in spec.options}
        parsed: dict[str, Any] = {}
        for key, text in given.items():
            option = declared.get(key)
            if option is None:
                close = difflib.get_close_matches(key, list(declared), n=1, cutoff=0.6)
                takes = f"it takes {', '.join(declared)}" if declared else "it takes no options"
                raise RbenchError(f"unknown --executor-option {key!r} for the {name} executor"
                                  + (f" (did you mean {close[0]!r}?)" if close else "") + f"; {takes}")
            try:
                parsed[key] = option.parse(text)
            except (TypeError, ValueError) as exc:
                raise RbenchError(f"--executor-option {key}={text}: {exc} ({option.help})") from None
        return parsed

    def _declared(self, kind: str, declares: Any, missing: str) -> str:
        found = [spec.name for spec in getattr(self, kind).values() if declares(spec)]
        if not found:
            raise RbenchError(missing)
        return found[0]  # `_check_declarations` lets at most one declare it


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _entry_points(group: str) -> list[EntryPoint]:
    found = sorted(entry_points(group=group), key=lambda ep: ep.name)
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("", "0"):
        found = [ep for ep in found if ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION]
    return found


def load_registry(extra: Iterable[tuple[str, ModuleType | object]] = ()) -> Registry:
    """Load every plugin from the entry-point groups (plus `extra` `(name, plugin)` pairs).

    Raises `PluginError` naming the plugin and its distribution when one fails to import or
    register, or when two plugins provide the same name of one kind.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    for group in dict.fromkeys(group for group, _, _ in KINDS.values()):
        for ep in _entry_points(group):
            name, dist = f"{group}:{ep.name}", _distribution(ep)
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # any failure inside a third-party import, even sys.exit()
                what = (f"called sys.exit({exc.code!r}) while being imported" if isinstance(exc, SystemExit)
                        else f"failed to import: {type(exc).__name__}: {exc}")
                raise PluginError(
                    f"plugin {name} (from {dist}) {what}; fix or uninstall it, or set {DISABLE_AUTOLOAD_ENV}=1"
                ) from exc
            _register(pm, registry, name, dist, plugin)
    for name, plugin in extra:
        _register(pm, registry, name, "no distribution", plugin)
    _check_hooks(pm, registry)
    for kind, (_, hook_name, spec_type) in KINDS.items():
        table = getattr(registry, kind)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            info = registry.plugins[impl.plugin_name]
            for spec in impl.function() or ():
                if not isinstance(spec, spec_type):
                    raise PluginError(
                        f"plugin {info.name} (from {info.distribution}) returned "
                        f"{type(spec).__name__} from {hook_name}, expected {spec_type.__name__}"
                    )
                if spec.name in table:
                    other = _provider(registry, kind, spec.name)
                    raise PluginError(
                        f"{_noun(kind)} name {spec.name!r} is provided twice: by plugin {other.name} "
                        f"(from {other.distribution}) and by plugin {info.name} (from {info.distribution}); "
                        "uninstall one of them"
                    )
                table[spec.name] = spec
                info.provides.append(f"{kind}:{spec.name}")
    _check_metric_columns(registry)
    _check_declarations(registry)
    _check_added_views(registry)
    return registry


def _noun(kind: str) -> str:
    return "added views" if kind == "added_views" else kind.rstrip("s")


def _provider(registry: Registry, kind: str, name: str) -> PluginInfo:
    """The plugin that provides the spec `name` of `kind`."""
    return next(p for p in registry.plugins.values() if f"{kind}:{name}" in p.provides)


def _check_hooks(pm: pluggy.PluginManager, registry: Registry) -> None:
    """pluggy's `check_pending`, as one line: a hook implementation that no rbench hook declares
    (a misspelled `rbench_dataset`) would register silently and provide nothing."""
    import difflib

    hooks = [hook_name for _, hook_name, _ in KINDS.values()]
    for hook_name, caller in vars(pm.hook).items():
        if hook_name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            info = registry.plugins[impl.plugin_name]
            close = difflib.get_close_matches(hook_name, hooks, n=1, cutoff=0.6)
            raise PluginError(
                f"plugin {info.name} (from {info.distribution}) implements the unknown hook {hook_name!r}"
                + (f"; did you mean {close[0]}?" if close else f"; rbench's hooks are {', '.join(hooks)}")
            )
    pm.check_pending()  # anything the loop above missed is a bug, not a user's error


def _check_metric_columns(registry: Registry) -> None:
    """Two metrics that declare one column (`MetricSpec.columns`) would overwrite each other's values."""
    writer: dict[str, MetricSpec] = {}
    for metric in registry.metrics.values():
        for column in metric.columns:
            other = writer.setdefault(column, metric)
            if other is metric:
                if metric.columns.count(column) > 1:
                    info = _provider(registry, "metrics", metric.name)
                    raise PluginError(f"metric {metric.name!r} of plugin {info.name} (from {info.distribution}) "
                                      f"declares the column {column!r} twice in its MetricSpec.columns")
                continue
            first, second = _provider(registry, "metrics", other.name), _provider(registry, "metrics", metric.name)
            raise PluginError(
                f"metric column {column!r} is written by metric {other.name!r} of plugin {first.name} "
                f"(from {first.distribution}) and by metric {metric.name!r} of plugin {second.name} "
                f"(from {second.distribution}); a column has one metric: rename it, or uninstall one of them"
            )


def _check_added_views(registry: Registry) -> None:
    """Every view name is one view's: an added view's name is no data set's view (`DatasetSpec.views`)
    nor another `AddedViews`' view, so its `results-<view>.csv` is its own."""
    owner: dict[str, tuple[str, str]] = {}  # view -> (what declares it, the plugin entry)
    for name, spec in registry.datasets.items():
        for view in spec.view_bases():
            owner.setdefault(view, (f"data set {name!r}", f"datasets:{name}"))
    for name, spec in registry.added_views.items():
        info = _provider(registry, "added_views", name)
        for view in spec.views:
            if view in owner:
                what, entry = owner[view]
                other = next(p for p in registry.plugins.values() if entry in p.provides)
                raise PluginError(f"the view {view!r} of added views {name!r} of plugin {info.name} (from "
                                  f"{info.distribution}) is also a view of {what} of plugin {other.name} (from "
                                  f"{other.distribution}); a view has one name: rename it, or uninstall one of them")
            owner[view] = (f"added views {name!r}", f"added_views:{name}")


def _check_declarations(registry: Registry) -> None:
    """What at most one plugin may declare (the `--data-dir` data set, the default data set, the
    reference backend, the default executors, an executor option's flag) is declared once."""
    claims: dict[tuple[str, Any], list[tuple[str, str]]] = {}
    for name, spec in registry.datasets.items():
        for what, declared in (("the --data-dir data set (DatasetSpec.data_dir)", spec.data_dir),
                               ("the default data set (DatasetSpec.default)", spec.default)):
            if declared:
                claims.setdefault(("datasets", what), []).append(("data set", name))
    for name, spec in registry.backends.items():
        if spec.reference:
            claims.setdefault(("backends", "the reference backend (BackendSpec.reference)"), []).append(
                ("backend", name))
    for name, spec in registry.executors.items():
        if spec.default_for is not None:
            claims.setdefault(("executors", f"the default executor for {spec.default_for} (ExecutorSpec.default_for)"),
                              []).append(("executor", name))
        keys = [option.name for option in spec.options]
        for option in spec.options:
            if keys.count(option.name) > 1 or (option.flag is not None and not option.flag.startswith("--")):
                info = _provider(registry, "executors", name)
                raise PluginError(f"executor {name!r} of plugin {info.name} (from {info.distribution}) declares the "
                                  f"option {option.name!r} twice, or with a flag that does not start with --")
            if option.flag:
                claims.setdefault(("executors", f"the flag {option.flag}"), []).append(("executor", name))
    for (kind, what), owners in claims.items():
        if len(owners) > 1:
            (noun, first), (_, second) = owners[:2]
            one, two = _provider(registry, kind, first), _provider(registry, kind, second)
            raise PluginError(f"{what} is declared twice: by {noun} {first!r} of plugin {one.name} (from "
                              f"{one.distribution}) and by {noun} {second!r} of plugin {two.name} (from "
                              f"{two.distribution}); uninstall one of them")


def _register(pm: pluggy.PluginManager, registry: Registry, name: str, dist: str, plugin: object) -> None:
    if pm.is_registered(plugin):  # one module listed under several groups
        return
    if name in registry.plugins:
        other = registry.plugins[name].distribution
        raise PluginError(
            f"plugin name {name} is declared twice: by {other} and by {dist}; uninstall one of them"
        )
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        summary = " ".join(str(exc).split("\n", 1)[0].split())  # pluggy adds a multi-line listing
        raise PluginError(f"plugin {name} (from {dist}) could not be registered: {summary}") from exc
    registry.plugins[name] = PluginInfo(name=name, distribution=dist)


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def check_data_options(spec: DatasetSpec, given: Mapping[str, str], report: bool = False) -> None:
    """A `DataError` for a `--data-option` key that `spec` does not declare (see
    `DatasetSpec.options` and `DatasetSpec.report_options`), listing the keys it takes; with
    `report` (`rbench report`, which lists no data), for any key but a report option. Nothing is
    checked for a spec whose `options` is None (not declared), but on a report."""
    import difflib

    if spec.options is None and not report:
        return
    takes_keys = list(spec.report_options) if report else [*spec.options, *spec.report_options]
    unknown = sorted(set(given) - set(takes_keys))
    if not unknown:
        return
    if report and unknown[0] in (spec.options or {}):
        raise DataError(f"--data-option {spec.name}.{unknown[0]} is read when the data is listed: give it to "
                        f"`rbench run`; `rbench report` takes "
                        + (", ".join(f"{spec.name}.{key}" for key in takes_keys) if takes_keys
                           else f"no option of {spec.name}"))
    close = difflib.get_close_matches(unknown[0], takes_keys, n=1, cutoff=0.6)
    takes = (f"it takes {', '.join(f'{spec.name}.{key}' for key in takes_keys)}" if takes_keys
             else "it takes no options")
    raise DataError(f"unknown --data-option {spec.name}.{unknown[0]}"
                    + (f" (did you mean {spec.name}.{close[0]}?)" if close else "")
                    + f"; {takes}")
