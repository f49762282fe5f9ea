"""The command line end to end: the embedded default run, listings, and one-line errors."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from rbench.frontend.cli import main

VALIDATION_HEADER = "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation"
INFER_HEADER = "model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs,infer_macts"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_default_run_writes_the_three_csvs_with_spec_headers_sorted(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, "-m", "rbench", "run", "--out", str(out)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "weights: random" in result.stderr  # a warning, on stderr: the weights are random

    validation = (out / "results-synthetic.csv").read_text().splitlines()
    assert validation[0] == VALIDATION_HEADER
    rows = list(csv.DictReader(validation))
    assert len(rows) == 3
    keys = [(-float(r["top1"]), -float(r["top5"]), r["model"]) for r in rows]
    assert keys == sorted(keys)

    (bench,) = out.glob("benchmark-infer-*.csv")
    torch_digits = torch.__version__.split("+")[0].replace(".", "")
    assert re.fullmatch(rf"benchmark-infer-fp32-nchw-pt{torch_digits}-cpu-[a-z0-9_]+\.csv", bench.name)
    lines = bench.read_text().splitlines()
    assert lines[0] == INFER_HEADER
    rates = [float(r["infer_samples_per_sec"]) for r in csv.DictReader(lines)]
    assert len(rates) == 3 and rates == sorted(rates, reverse=True)

    metadata = (out / "model_metadata-in1k.csv").read_text().splitlines()
    assert metadata == ["model,pretrain", "test_byobnet.r160_in1k,in1k", "test_efficientnet.r160_in1k,in1k",
                        "test_vit.r160_in1k,in1k"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "-m", "test_vitt"], "unknown model 'test_vitt'; did you mean 'test_vit'"),
        (["run", "-m", "test_vit", "-d", "synthetc"], "unknown dataset 'synthetc'; did you mean 'synthetic'"),
        (["run", "-m", "test_vit", "-b", "cpux"], "unknown backend 'cpux'; did you mean 'cpu'"),
        (["run", "-m", "test_vit", "--bench", "valid"], "unknown benchmark 'valid'"),
        (["run", "-m", "test_vit", "-b", "channels-last"], "starts with the modifier 'channels-last'"),
        (["run", "-m", "test_vit", "-b", "cpu+cuda"], "two base backends"),
        (["run", "-m", "nosuchmodel*"], "matches no timm model"),
        (["run", "-m", "test_vit.no_such_tag"], "unknown pretrained tag 'test_vit.no_such_tag'"),
        (["run", "-m", "test_vit", "-d", "imagefolder", "--weights", "random"], "needs a folder: pass --data-dir"),
        (["run", "-m", "test_vit", "--data", "imagefolder"], "expected NAME=PATH"),
        (["run", "-m", "test_vit", "--weights", "nothere.pt"], "not 'pretrained', 'random' or an existing checkpoint"),
        (["run", "-m", "@missing-list.txt"], "model list missing-list.txt does not exist"),
        (["metadata", "-m", "test_vitt"], "unknown model 'test_vitt'; did you mean 'test_vit'"),
        (["metadata", "-m", "nosuchmodel*"], "matches no timm model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert expected in line


# Every numeric option of every command, with a value inside its range and its range's words.
NUMERIC_OPTIONS = [
    (["run", "--dry-run"], "--batch-size", "from 1 to 65,536"), (["run", "--dry-run"], "--workers", "from 0 to 1,024"),
    (["run", "--dry-run"], "--img-size", "from 16 to 8,192"), (["run", "--dry-run"], "--warmup-steps", "from 0 to 1,000,000"),
    (["run", "--dry-run"], "--bench-steps", "from 1 to 1,000,000"), (["run", "--dry-run"], "--bench-seconds", "from 0 to 86,400"),
    (["run", "--dry-run"], "--bench-repeats", "from 1 to 1,000"), (["run", "--dry-run"], "--latency-queries", "from 1 to 10,000,000"),
    (["run", "--dry-run"], "--latency-seconds", "from 0 to 86,400"), (["run", "--dry-run"], "--latency-batch-size", "from 1 to 65,536"),
    (["run", "--dry-run"], "--cell-timeout", "above 0 and at most 604,800"), (["run", "--dry-run"], "--limit", "from 1 to 1,000,000,000"),
    (["compare", "a", "b"], "--img-size", "from 1 to 8,192"), (["check-backend", "cpu"], "--workers", "from 0 to 1,024"),
    (["metadata", "-m", "test_vit"], "--workers", "from 0 to 1,024"),
]


@pytest.mark.parametrize(("command", "option", "span"), NUMERIC_OPTIONS, ids=[f"{c[0]} {o}" for c, o, _ in NUMERIC_OPTIONS])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e400", "99999999999999999999"])
def test_a_non_finite_or_huge_number_is_one_line_and_exit_2(command, option, span, value, tmp_path, monkeypatch):
    """`--bench-seconds inf` would benchmark forever, `nan` passes every comparison: every numeric
    option takes a finite number in its range, else one line and exit 2, before any work."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*command, option, value])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"rbench: error: {option} {value}: expected a ") and line.endswith(span)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_numeric_options_of_the_commands_are_all_checked():
    """The list above is every numeric option: a new one gets its range too."""
    import click

    from rbench.frontend.cli import Number

    def numeric(command, path):
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType, Number)):
                yield path, param.opts[0]
        for name, sub in getattr(command, "commands", {}).items():
            yield from numeric(sub, [*path, name])

    found = {(path[0], option) for path, option in numeric(main, [])}
    assert found == {(command[0], option) for command, option, _ in NUMERIC_OPTIONS}
    assert not [o for c in main.commands.values() for p in c.params for o in p.opts
                if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))]  # click's own: not one line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_backend_is_a_clear_error():
    result = invoke("run", "-m", "test_vit", "-b", "cuda-amp+channels-last")
    assert result.exit_code == 2
    assert "backend 'cuda-amp' is not available here: torch sees no CUDA device" in result.output


def test_missing_data_folder_is_reported_before_any_model_runs(tmp_path):
    result = invoke("run", "-m", "test_vit", "--data-dir", str(tmp_path / "nope"), "--weights", "random")
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope'} does not exist" in result.output


def test_pretrained_weights_missing_offline_are_one_line_before_any_model_runs(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    out = tmp_path / "out"
    result = invoke("run", "-m", "test_vit,test_efficientnet.r160_in1k", "--bench", "validate", "--out", str(out))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line == ("rbench: error: pretrained weights for 2 model(s) are not in the local cache and HF_HUB_OFFLINE "
                    "is set: test_vit, test_efficientnet.r160_in1k; download them first (run once online), or pass "
                    "--weights random")
    assert not (out / "store").exists()  # nothing ran


def test_models_from_file_and_globs(tmp_path):
    listing = tmp_path / "models.txt"
    listing.write_text("# tiny ones\ntest_vit\ntest_byobnet.r160_in1k  # tagged\n")
    out = tmp_path / "out"
    result = invoke("run", "-m", f"@{listing}", "-m", "test_efficientnet*", "--bench", "metadata", "--out", str(out))
    assert result.exit_code == 0, result.output
    models = [r["model"] for r in csv.DictReader((out / "model_metadata-in1k.csv").open())]
    assert "test_vit.r160_in1k" in models and "test_byobnet.r160_in1k" in models
    assert {"test_efficientnet.r160_in1k", "test_efficientnet_gn.r160_in1k"} <= set(models)


def test_list_backends_marks_unavailable_ones():
    result = invoke("list", "backends")
    assert result.exit_code == 0
    cpu_line = next(line for line in result.output.splitlines() if " name=cpu " in line)
    assert " available=yes " in cpu_line
    if not torch.cuda.is_available():
        cuda_line = next(line for line in result.output.splitlines() if " name=cuda-amp " in line)
        assert "no: torch sees no CUDA device" in cuda_line


def test_list_models_pattern():
    result = invoke("list", "models", "test_vit*")
    assert result.exit_code == 0
    assert sorted(result.output.split()) == ["test_vit.r160_in1k", "test_vit2.r160_in1k", "test_vit3.r160_in1k"]


def test_help_reads_well():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for option in ("--models", "--datasets", "--backends", "--bench", "--out", "--data-root", "--batch-size",
                   "--workers", "--img-size", "--weights", "--trust-checkpoint"):
        assert option in result.output


def test_data_option_alone_selects_that_data_set(image_folder, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "-m", "test_vit", "--weights", "random", "--data", f"imagefolder={image_folder}",
                    "--bench", "validate", "--out", str(out), "--workers", "0")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.csv")) == ["metrics-imagefolder.csv", "results-imagefolder.csv"]


def test_a_model_list_or_data_folder_of_the_wrong_kind_is_one_line_that_says_so(tmp_path, monkeypatch):
    """A model list that is not UTF-8 or is a folder, and a --data-dir that is a file: each is one
    line saying what is wrong (not a traceback, not "does not exist")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models.txt").write_bytes(b"test_vit\n# r\xe9sum\xe9\n")
    (tmp_path / "lists").mkdir()
    (tmp_path / "images.txt").write_text("not a folder\n")
    for args, expected in [
        (["-m", "@models.txt"], "model list models.txt line 2: byte 0xe9 is not UTF-8; @FILE needs a UTF-8 text file"),
        (["-m", "@lists"], "model list lists is a folder; @FILE needs a text file of model names"),
        (["-m", "test_vit", "--weights", "random", "--data-dir", "images.txt"],
         "data folder images.txt is a file, not a folder"),
    ]:
        result = CliRunner().invoke(main, ["run", *args, "--dry-run"])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert expected in line and "does not exist" not in line, line
