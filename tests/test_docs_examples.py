"""The plugin examples in docs/ are real code: extract them, register them, run them."""

from __future__ import annotations

import csv
import re
import types
from pathlib import Path

from click.testing import CliRunner

import rbench
import rbench.registry
from rbench.frontend.cli import main
from rbench.registry import load_registry

from .conftest import write_jpegs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / doc).read_text(), flags=re.S)


def test_objectnet_like_plugin_from_the_docs_runs_with_label_sets_and_a_class_subset(tmp_path, monkeypatch):
    (code,) = python_blocks("objectnet-like-plugin.md")
    module = types.ModuleType("rbench_objectlike")
    exec(compile(code, "rbench_objectlike.py", "exec"), module.__dict__)
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:objectlike", module)]))

    folder = tmp_path / "objectlike"
    for i, name in enumerate(module.FOLDER_TO_IMAGENET):
        write_jpegs(folder / name, 3, seed=i)
    source = module.load(rbench.DataRequest(path=folder, cache_dir=tmp_path))
    (view,) = source.views
    assert view.labels[3:6] == [(423, 559, 765)] * 3  # "chair" sorts second
    assert view.classes == (423, 559, 752, 765, 898, 907, 954)

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", "random", "-d", "objectlike",
                                       "--data", f"objectlike={folder}", "--bench", "validate",
                                       "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader((out / "results-objectlike.csv").open()))
    # Over the 7 restricted classes, top-5 leaves out only 2, so a "chair" image (3 accepted
    # classes) is always right at 5: at least 3 of the 12 images. 1000-way it would be ~0.
    assert float(row["top5"]) >= 25.0
    assert row["top1_diff"] == ""  # no imagenet rows in this run


def test_every_hook_and_entry_point_group_is_documented_in_writing_plugins():
    import inspect
    import tomllib

    import rbench.hookspecs

    page = (DOCS / "writing-plugins.md").read_text()
    hooks = [name for name, f in inspect.getmembers(rbench.hookspecs, inspect.isfunction) if name.startswith("rbench_")]
    assert len(hooks) >= 4
    for hook in hooks:
        assert f"`{hook}()`" in page, f"{hook} is not documented in docs/writing-plugins.md"
    pyproject = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())
    groups = [g for g in pyproject["project"]["entry-points"] if g.startswith("rbench.")]
    assert len(groups) >= 4
    for group in groups:
        assert f"`{group}`" in page, f"the entry-point group {group} is not documented in docs/writing-plugins.md"


def test_every_python_block_of_writing_plugins_runs_and_its_hooks_return_specs(monkeypatch, tmp_path):
    import sys

    from rbench.specs import AddedViews, BackendSpec, DatasetSpec, ExecutorSpec, MetricSpec

    blocks = python_blocks("writing-plugins.md")
    assert len(blocks) >= 3
    returned = 0
    for i, code in enumerate(blocks):
        # The page's first block is the `rbench_imagenette` plugin that its later blocks import.
        module = types.ModuleType("rbench_imagenette" if i == 0 else f"rbench_docs_block_{i}")
        if i == 0:
            monkeypatch.setitem(sys.modules, module.__name__, module)
        write_jpegs(tmp_path / "n01440764", 2, seed=i)  # an Imagenette class, for the testing example
        module.tmp_path = tmp_path
        exec(compile(code, f"writing-plugins.md block {i}", "exec"), module.__dict__)
        for name in ("rbench_datasets", "rbench_added_views", "rbench_metrics", "rbench_backends", "rbench_executors"):
            hook = getattr(module, name, None)
            if hook is not None:
                specs = list(hook())
                assert specs and all(isinstance(s, (DatasetSpec, AddedViews, MetricSpec, BackendSpec, ExecutorSpec))
                                     for s in specs)
                returned += len(specs)
        load_registry(extra=[(f"test:docs{i}", module)])  # registers like an installed plugin
    assert returned >= 3


def test_the_python_blocks_of_the_api_page_run_in_order(tmp_path, monkeypatch, capsys):
    blocks = python_blocks("api.md")
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)  # the page writes to ./results
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"api.md block {i}", "exec"), namespace)
    report = namespace["report"]
    with open(tmp_path / "results" / "results-synthetic.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["model"] for r in rows) == ["test_byobnet@random", "test_vit@random"]
    assert len(namespace["vit"]) == 100  # the synthetic set: 10 classes x 10 images
    printed = capsys.readouterr().out
    assert "0 cell(s) to run, 1 already in the store" in printed  # the progress example ran nothing
    assert "unknown model" in printed or "no_such_model" in printed
    assert report.tables["results-synthetic"].height == 2


def test_the_pool_executor_of_writing_plugins_runs_a_grid_as_the_local_one_does(tmp_path, monkeypatch, images):
    """The page's `pool` executor, installed as a module of its own (its spawned workers import
    it), runs a grid: each cell's record comes back and the rows equal the local executor's."""
    import sys

    code = next(block for block in python_blocks("writing-plugins.md") if 'name="pool"' in block)
    (tmp_path / "rbench_pool_docs.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rbench_pool_docs", raising=False)
    import rbench_pool_docs

    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:pool", rbench_pool_docs)]))
    tables = {}
    for executor in ("pool", "local"):
        report = rbench.evaluate(["test_vit", "test_byobnet"], data_dir=images, bench="validate", weights="random",
                                 img_size=32, batch_size=4, workers=0, executor=executor, out=tmp_path / executor,
                                 **({"executor_options": {"processes": "2"}} if executor == "pool" else {}))
        assert report.failures.is_empty() and not report.skipped_cells, executor
        tables[executor] = report.tables["results-imagefolder"]
    assert sorted(tables["pool"]["model"]) == ["test_byobnet@random", "test_vit@random"]
    assert tables["pool"].equals(tables["local"])
