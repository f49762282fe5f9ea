"""Plugin discovery through entry points: built-ins, third-party plugins, and their failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rbench import DatasetSpec, Source, ViewSpec, hookimpl
from rbench.errors import PluginError
from rbench.registry import load_registry

from .conftest import make_distribution


DATASET_PLUGIN = """
import rbench

@rbench.hookimpl
def rbench_datasets():
    return [rbench.DatasetSpec(name={name!r}, description="from a test plugin", load=None)]
"""


def rbench_cli(*args: str, site: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if site is not None:
        full_env["PYTHONPATH"] = os.pathsep.join([str(site), full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "rbench", *args], capture_output=True, text=True, env=full_env)


def test_builtins_are_registered_through_entry_points_namespaced_by_group():
    registry = load_registry()
    assert {"synthetic", "imagefolder"} <= set(registry.datasets)
    assert "accuracy" in registry.metrics
    assert {"cpu", "cpu-amp-bf16", "cuda", "cuda-amp", "cuda-amp-bf16", "cuda-fp16", "cuda-bf16", "channels-last",
            "compile"} <= set(registry.backends)
    assert registry.plugins["rbench.datasets:synthetic"].distribution.startswith("rbench ")
    assert "datasets:synthetic" in registry.plugins["rbench.datasets:synthetic"].provides
    assert registry.plugins["rbench.backends:cuda"].provides == [
        "backends:cuda", "backends:cuda-amp", "backends:cuda-amp-bf16", "backends:cuda-fp16", "backends:cuda-bf16"]


def test_same_entry_point_name_in_two_groups_does_not_shadow(tmp_path):
    metric = """
    import rbench

    @rbench.hookimpl
    def rbench_metrics():
        return [rbench.MetricSpec(name="synthetic", description="d", columns=("x",), compute=lambda *a: {"x": 0.0})]
    """
    make_distribution(tmp_path, "samename", {"rbench.metrics": {"synthetic": "samename_metric"}},
                      {"samename_metric": metric})
    result = rbench_cli("plugins", site=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rbench.metrics:synthetic" in result.stdout
    assert "rbench.datasets:synthetic" in result.stdout


def test_plugin_that_raises_on_import_exits_2_with_one_line(tmp_path):
    make_distribution(tmp_path, "brokenplug", {"rbench.datasets": {"broken": "brokenplug_mod"}},
                      {"brokenplug_mod": "raise RuntimeError('boom at import')\n"})
    result = rbench_cli("list", "datasets", site=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "rbench.datasets:broken" in lines[0] and "brokenplug 1.0" in lines[0] and "boom at import" in lines[0]


def test_two_plugins_with_the_same_dataset_name_exit_2_naming_both(tmp_path):
    make_distribution(tmp_path, "plugone", {"rbench.datasets": {"one": "plugone_mod"}},
                      {"plugone_mod": DATASET_PLUGIN.format(name="twin")})
    make_distribution(tmp_path, "plugtwo", {"rbench.datasets": {"two": "plugtwo_mod"}},
                      {"plugtwo_mod": DATASET_PLUGIN.format(name="twin")})
    result = rbench_cli("run", "--bench", "metadata", "-m", "test_vit", site=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'twin'" in lines[0]
    assert "rbench.datasets:one (from plugone 1.0)" in lines[0] and "rbench.datasets:two (from plugtwo 1.0)" in lines[0]


def test_duplicate_of_a_builtin_name_is_refused(tmp_path):
    make_distribution(tmp_path, "clash", {"rbench.datasets": {"clash": "clash_mod"}},
                      {"clash_mod": DATASET_PLUGIN.format(name="synthetic")})
    result = rbench_cli("list", "datasets", site=tmp_path)
    assert result.returncode == 2
    assert "rbench.datasets:synthetic" in result.stderr and "clash 1.0" in result.stderr


def test_disable_autoload_loads_builtins_only(tmp_path):
    make_distribution(tmp_path, "brokenplug", {"rbench.datasets": {"broken": "brokenplug_mod"}},
                      {"brokenplug_mod": "raise RuntimeError('boom')\n"})
    result = rbench_cli("list", "datasets", site=tmp_path, env={"RBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stderr
    assert "synthetic" in result.stdout and "broken" not in result.stdout


def test_a_spec_of_the_wrong_type_names_the_plugin():
    class Wrong:
        @hookimpl
        def rbench_datasets(self):
            return [ViewSpec(name="not-a-dataset")]

    with pytest.raises(PluginError, match="test:wrong.*ViewSpec.*DatasetSpec"):
        load_registry(extra=[("test:wrong", Wrong())])


def test_extra_plugin_object_provides_a_dataset():
    class Extra:
        @hookimpl
        def rbench_datasets(self):
            return [DatasetSpec(name="extra", description="d",
                                load=lambda req: Source(name="extra", root=Path("."), samples=[], views=[]))]

    registry = load_registry(extra=[("test:extra", Extra())])
    assert registry.datasets["extra"].description == "d"
    assert registry.plugins["test:extra"].provides == ["datasets:extra"]


def test_two_distributions_with_one_entry_point_name_exit_2_naming_both(tmp_path):
    make_distribution(tmp_path, "firstdist", {"rbench.datasets": {"same": "firstdist_mod"}},
                      {"firstdist_mod": DATASET_PLUGIN.format(name="first")})
    make_distribution(tmp_path, "seconddist", {"rbench.datasets": {"same": "seconddist_mod"}},
                      {"seconddist_mod": DATASET_PLUGIN.format(name="second")})
    result = rbench_cli("list", "datasets", site=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "rbench.datasets:same" in line and "firstdist 1.0" in line and "seconddist 1.0" in line


def test_hook_with_wrong_arguments_is_one_line(tmp_path):
    bad = """
    import rbench

    @rbench.hookimpl
    def rbench_datasets(unexpected):
        return []
    """
    make_distribution(tmp_path, "badhook", {"rbench.datasets": {"badhook": "badhook_mod"}}, {"badhook_mod": bad})
    result = rbench_cli("list", "datasets", site=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "rbench.datasets:badhook (from badhook 1.0) could not be registered" in line


def test_plugin_that_calls_sys_exit_on_import_exits_2_with_one_line(tmp_path):
    make_distribution(tmp_path, "exitplug", {"rbench.datasets": {"exiting": "exitplug_mod"}},
                      {"exitplug_mod": "import sys\nsys.exit(3)\n"})
    result = rbench_cli("list", "datasets", site=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "rbench.datasets:exiting" in lines[0] and "exitplug 1.0" in lines[0] and "sys.exit(3)" in lines[0]


def test_a_misspelled_hook_exits_2_naming_the_plugin_and_the_hook(tmp_path):
    misspelled = """
    import rbench

    @rbench.hookimpl
    def rbench_dataset():
        return [rbench.DatasetSpec(name="typo", description="never registered", load=None)]
    """
    make_distribution(tmp_path, "typoplug", {"rbench.datasets": {"typo": "typoplug_mod"}},
                      {"typoplug_mod": misspelled})
    result = rbench_cli("list", "datasets", site=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "rbench.datasets:typo (from typoplug 1.0)" in line
    assert "'rbench_dataset'" in line and "did you mean rbench_datasets?" in line


METRIC_PLUGIN = """
import rbench

@rbench.hookimpl
def rbench_metrics():
    return [rbench.MetricSpec(name={name!r}, description="d", columns={columns!r}, compute=lambda *a: {{}})]
"""


def test_two_metrics_writing_one_column_exit_2_naming_both(tmp_path):
    make_distribution(tmp_path, "nllone", {"rbench.metrics": {"nllone": "nllone_mod"}},
                      {"nllone_mod": METRIC_PLUGIN.format(name="nll-one", columns=("loss", "nll_sum"))})
    make_distribution(tmp_path, "nlltwo", {"rbench.metrics": {"nlltwo": "nlltwo_mod"}},
                      {"nlltwo_mod": METRIC_PLUGIN.format(name="nll-two", columns=("nll_sum",))})
    result = rbench_cli("list", "metrics", site=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "'nll_sum'" in line
    assert "'nll-one' of plugin rbench.metrics:nllone (from nllone 1.0)" in line
    assert "'nll-two' of plugin rbench.metrics:nlltwo (from nlltwo 1.0)" in line


def test_a_metric_writing_a_builtin_metrics_column_is_refused(tmp_path):
    make_distribution(tmp_path, "mytop", {"rbench.metrics": {"mytop": "mytop_mod"}},
                      {"mytop_mod": METRIC_PLUGIN.format(name="my-top1", columns=("top1",))})
    result = rbench_cli("run", "--bench", "metadata", "-m", "test_vit", site=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "'top1'" in line and "'accuracy' of plugin rbench.metrics:accuracy (from rbench " in line
    assert "'my-top1' of plugin rbench.metrics:mytop (from mytop 1.0)" in line


EXECUTOR_PLUGIN = """
import json
import os

import rbench


def execute(grid):
    with open(os.environ["RBENCH_TEST_EXECUTOR_OPTIONS"], "w") as f:
        json.dump(dict(grid.options), f)
    yield from rbench.run_cells(grid.job(grid.cells), on_event=grid.on_event, registry=grid.registry)


@rbench.hookimpl
def rbench_executors():
    return [rbench.ExecutorSpec(name="recording", description="records its options", execute=execute, options=[
        rbench.ExecutorOption(name="slots", help="N: cells at once", parse=int),
        rbench.ExecutorOption(name="queue", help="NAME: the queue", flag="--recording-queue"),
    ])]
"""


def test_an_executor_gets_the_options_it_declares_parsed(tmp_path):
    import json

    site, out = tmp_path / "site", tmp_path / "out"
    make_distribution(site, "recording", {"rbench.executors": {"recording": "recording_mod"}},
                      {"recording_mod": EXECUTOR_PLUGIN})
    recorded = tmp_path / "options.json"
    env = {"RBENCH_TEST_EXECUTOR_OPTIONS": str(recorded)}
    run = ("run", "-m", "test_vit", "--weights", "random", "--bench", "validate", "--limit", "4", "--workers", "0",
           "--no-cache", "--out", str(out), "--executor", "recording")
    result = rbench_cli(*run, "--executor-option", "slots=3", "--recording-queue", "fast", site=site, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(recorded.read_text()) == {"slots": 3, "queue": "fast"}  # slots parsed to an int
    assert (out / "results-synthetic.csv").is_file()

    for bad, expected in [(("--executor-option", "slots=many"), "--executor-option slots=many: "),
                          (("--executor-option", "slot=3"), "unknown --executor-option 'slot' for the recording "
                                                            "executor (did you mean 'slots'?)")]:
        result = rbench_cli(*run, *bad, site=site, env=env)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert expected in line


def test_an_executors_flag_with_another_executor_is_one_line(tmp_path):
    make_distribution(tmp_path, "recording", {"rbench.executors": {"recording": "recording_mod"}},
                      {"recording_mod": EXECUTOR_PLUGIN})
    result = rbench_cli("run", "-m", "test_vit", "--bench", "validate", "--executor", "local",
                        "--recording-queue", "fast", site=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "--recording-queue is an option of the recording executor" in line


def test_a_second_data_dir_data_set_exits_2_naming_both(tmp_path):
    folder_plugin = """
    import rbench

    @rbench.hookimpl
    def rbench_datasets():
        return [rbench.DatasetSpec(name="myfolder", description="d", load=None, data_dir=True)]
    """
    make_distribution(tmp_path, "myfolder", {"rbench.datasets": {"myfolder": "myfolder_mod"}},
                      {"myfolder_mod": folder_plugin})
    result = rbench_cli("list", "datasets", site=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "the --data-dir data set (DatasetSpec.data_dir) is declared twice" in line
    assert "'imagefolder' of plugin rbench.datasets:imagefolder" in line
    assert "'myfolder' of plugin rbench.datasets:myfolder (from myfolder 1.0)" in line


def test_what_core_runs_by_default_is_declared_by_the_plugins():
    """The `--data-dir` data set, the default data set, check-backend's reference and the default
    executors come from the built-in plugins' declarations."""
    registry = load_registry()
    assert registry.data_dir_dataset() == "imagefolder"
    assert registry.default_dataset() == "synthetic"
    assert registry.reference_backend() == "cpu"
    assert (registry.default_executor(benchmarks=True), registry.default_executor(benchmarks=False)) == (
        "subprocess", "local")
    assert [(spec.name, option.flag) for spec, option in registry.executor_flags()] == [("ray", "--ray-address")]
