"""Data set options: every key a plugin does not declare is an error before any model runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbench import DataError, DataRequest, DatasetSpec, Source
from rbench.cli import main
from rbench.registry import BUILTIN_DISTRIBUTION, check_data_options, get_registry


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rbench-example-plugin" / "rbench_example_plugin.py"


def run(*args: str):
    return CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", "random", "--bench", "validate",
                                     "--workers", "0", *args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    return line


def test_every_builtin_and_the_example_data_set_declares_its_options():
    registry = get_registry()
    builtin = [spec for name, spec in registry.datasets.items()
               if any(f"datasets:{name}" in p.provides and p.distribution.startswith(f"{BUILTIN_DISTRIBUTION} ")
                      for p in registry.plugins.values())]
    assert {s.name for s in builtin} >= {"synthetic", "imagefolder", "imagenet", "imagenet-c", "sketch"}
    assert all(spec.options is not None for spec in builtin), [s.name for s in builtin if s.options is None]
    assert set(registry.datasets["imagenet"].options) == {"labels"}
    assert set(registry.datasets["imagenet-c"].options) == {"per_class", "corruptions", "severities"}
    assert registry.datasets["synthetic"].options == {}
    spec = importlib.util.spec_from_file_location("example_plugin_source", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    (csvfolder,) = example.rbench_datasets()
    assert csvfolder.options == {}


@pytest.mark.parametrize(("option", "expected"), [
    ("synthetic.seed=3", "unknown --data-option synthetic.seed; it takes no options"),
    ("imagenet.lables=x.csv",
     "unknown --data-option imagenet.lables (did you mean imagenet.labels?); it takes imagenet.labels"),
    ("imagenet-c.severity=3", "unknown --data-option imagenet-c.severity (did you mean imagenet-c.severities?); "
                              "it takes imagenet-c.per_class, imagenet-c.corruptions, imagenet-c.severities"),
])
def test_an_unknown_data_option_is_one_line_naming_the_accepted_keys(option, expected, tmp_path):
    name = option.split(".")[0]
    result = run("-d", name, "--data-option", option, "--data-root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert one_error_line(result) == f"rbench: error: {expected}"
    assert not (tmp_path / "out" / "store").exists()


def test_undeclared_options_are_passed_through_and_declared_ones_checked():
    seen = {}

    def load(request):
        seen.update(request.options)
        return Source(name="x", root=Path("."), samples=[], views=[])

    check_data_options(DatasetSpec(name="x", description="-", load=load), {"anything": "1"})  # None: not declared
    check_data_options(DatasetSpec(name="x", description="-", load=load, options={"a": "A"}), {"a": "1"})
    with pytest.raises(DataError, match="unknown --data-option x.b; it takes x.a$"):
        check_data_options(DatasetSpec(name="x", description="-", load=load, options={"a": "A"}), {"a": "1", "b": "2"})
