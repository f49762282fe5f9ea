"""The hooks an rbench plugin can implement.

A plugin is a module registered under one of the entry-point groups `rbench.datasets`,
`rbench.metrics`, `rbench.backends` or `rbench.executors` (rbench's own plugins are declared the same way in its
`pyproject.toml`). It implements any of the hooks below with `@rbench.hookimpl`; each returns
an iterable of frozen spec dataclasses from `rbench.specs`.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from .specs import AddedViews, BackendSpec, DatasetSpec, ExecutorSpec, MetricSpec

PROJECT = "rbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rbench_datasets() -> Iterable[DatasetSpec]:
    """Return the data set sources this plugin provides.

    Example::

        @rbench.hookimpl
        def rbench_datasets():
            return [rbench.DatasetSpec(name="objectnet", description="...", load=load)]
    """


@hookspec
def rbench_added_views() -> Iterable[AddedViews]:
    """Return views over existing sources that this plugin adds (a module of the
    `rbench.datasets` group; it may implement `rbench_datasets` too). Each is scored from the
    stored predictions of its source's cells by `rbench report` (and every later run), with
    no model run.

    Example::

        @rbench.hookimpl
        def rbench_added_views():
            return [rbench.AddedViews(name="val-on-objectnet-classes", description="...",
                                      source="imagenet", views={"val-on-objectnet": "imagenet"},
                                      make=objectnet_views)]
    """


@hookspec
def rbench_metrics() -> Iterable[MetricSpec]:
    """Return the metrics this plugin provides.

    Example::

        @rbench.hookimpl
        def rbench_metrics():
            return [rbench.MetricSpec(name="nll", description="...", columns=("nll",),
                                      compute=negative_log_likelihood)]
    """


@hookspec
def rbench_backends() -> Iterable[BackendSpec]:
    """Return the accelerator backends or modifiers this plugin provides.

    Example::

        @rbench.hookimpl
        def rbench_backends():
            return [rbench.BackendSpec(name="mps", description="Apple GPU", device="mps",
                                       unavailable=lambda: None if mps_ok() else "no MPS")]
    """


@hookspec
def rbench_executors() -> Iterable[ExecutorSpec]:
    """Return the executors this plugin provides (how the cells of a grid are run).

    Example::

        @rbench.hookimpl
        def rbench_executors():
            return [rbench.ExecutorSpec(name="slurm", description="one Slurm job per model",
                                        execute=submit_and_wait)]
    """
