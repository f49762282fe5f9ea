"""`plan.run_options`: the one place `rbench run`'s defaults are decided."""

from __future__ import annotations

from pathlib import Path

from rbench.parent.plan import DEFAULT_SUITE_MODELS, run_options
from rbench.registry import load_registry
from rbench.worker.benchmark import BenchSettings

EMPTY = dict(models=[], datasets=[], backends=[], benches=[], data_paths={})


def test_nothing_given_is_the_embedded_default_suite():
    options = run_options(load_registry(), **EMPTY)
    assert options.models == DEFAULT_SUITE_MODELS and options.weights == "random"
    assert options.batch_size == 32 and options.bench.steps == 10 and options.bench.warmup_steps == 3
    assert options.executor == "subprocess"  # the default suite benchmarks: a fresh process per model


def test_a_data_dir_asks_for_the_data_set_that_takes_a_folder_and_bench_values_override():
    registry = load_registry()
    options = run_options(registry, **{**EMPTY, "models": ["test_vit"], "benches": ["validate"]},
                          data_dir=Path("/data/val"), batch_size=8, weights="pretrained",
                          bench={"steps": 7, "seconds": None, "warmup_steps": 0, "retry": False})
    assert options.data_paths == {registry.data_dir_dataset(): Path("/data/val")}
    assert options.datasets == [registry.data_dir_dataset()]
    assert options.executor == "local"  # validation only
    defaults = BenchSettings()
    assert (options.batch_size, options.bench.batch_size, options.bench.steps, options.bench.warmup_steps) == (8, 8, 7, 0)
    assert (options.bench.seconds, options.bench.retry) == (defaults.seconds, False)
    given = run_options(registry, **{**EMPTY, "models": ["test_vit"], "datasets": ["synthetic"],
                                     "data_paths": {"imagenet": Path("/x")}}, executor="local")
    assert given.datasets == ["synthetic"] and given.executor == "local"
