"""Text that is not markup is printed as it is: brackets in names, descriptions, paths and
messages are never taken for rich markup."""

from __future__ import annotations

import types

from click.testing import CliRunner

import rbench
import rbench.registry
from rbench.frontend.cli import main
from rbench.frontend.console import print_metadata_notes
from rbench.registry import load_registry

BRACKETS = "needs pkg[extra], shape [1, 3, 224, 224], [bold]not bold[/bold] and [red]"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def flat(output: str) -> str:
    """The output with the table borders and line breaks of wrapped cells taken out."""
    return " ".join("".join(ch for ch in output if ch not in "│┃┏┓┗┛┡┩└┘━─╇╋┳┻┼ \n").split())


def test_list_datasets_shows_the_extra_in_brackets():
    result = invoke("list", "datasets")
    assert result.exit_code == 0, result.output
    assert "(needs rbench[corruptions])" in " ".join(result.output.replace("│", " ").split())


def test_names_descriptions_and_distributions_keep_their_brackets(monkeypatch):
    module = types.ModuleType("rbench_brackets")

    @rbench.hookimpl
    def rbench_datasets():
        return [rbench.DatasetSpec(name="br[a]ckets", description=BRACKETS, load=lambda request: None,
                                   default_folder="data[v2]", options={})]

    @rbench.hookimpl
    def rbench_metrics():
        return [rbench.MetricSpec(name="m[1]", description=BRACKETS, columns=("top[1]",), compute=lambda *a: {})]

    module.rbench_datasets, module.rbench_metrics = rbench_datasets, rbench_metrics
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:br[a]ckets", module)]))
    squeezed = BRACKETS.replace(" ", "")
    for kind in ("datasets", "metrics"):
        result = invoke("list", kind)
        assert result.exit_code == 0, result.output
        assert squeezed in flat(result.output), result.output
    assert "br[a]ckets" in invoke("list", "datasets").output and "data[v2]" in invoke("list", "datasets").output
    assert "top[1]" in invoke("list", "metrics").output
    plugins = invoke("plugins").output
    assert "test:br[a]ckets" in plugins and "datasets:br[a]ckets" in plugins and "metrics:m[1]" in plugins


def test_cache_paths_keep_their_brackets(tmp_path):
    root = tmp_path / "cache[bold]"
    assert str(root) in invoke("cache", "ls", "--cache-dir", str(root)).output
    result = invoke("cache", "clear", "--all", "--cache-dir", str(root))
    assert result.exit_code == 0 and str(root) in result.output


def test_metadata_notes_keep_their_brackets():
    from rich.console import Console

    console = Console(record=True, width=300)
    from rbench.worker.metadata import UNKNOWN

    print_metadata_notes(console, [
        {"model": "m[x].tag", "note": f"RuntimeError: {BRACKETS}", "pretrain_data": "in1k", "technique": "sup"},
        {"model": "u[y].tag", "note": "", "pretrain_data": UNKNOWN, "technique": "sup"},
    ])
    text = console.export_text()
    assert f"m[x].tag: RuntimeError: {BRACKETS}" in text
    assert "u[y].tag" in text


def test_run_and_report_print_paths_and_notes_as_they_are(image_folder, tmp_path):
    folder = image_folder.rename(tmp_path / "images[bold]")
    out, cache = tmp_path / "out[red]", tmp_path / "cache[italic]"
    result = invoke("run", "-m", "test_vit", "--weights", "random", "--data-dir", str(folder), "--bench", "validate",
                    "--workers", "0", "--out", str(out), "--cache-dir", str(cache))
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", "")
    assert f"imagefolder: 32 images at {folder}" in text
    assert f"into {cache}" in text  # the input cache's note
    assert str(out / "results-imagefolder.csv") in text
    report = invoke("report", "--out", str(out))
    assert report.exit_code == 0 and str(out / "results-imagefolder.csv") in report.output.replace("\n", "")
