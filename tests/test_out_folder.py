"""`--out` holds every row of its store, whatever the last command ran: the files a run writes
are exactly those that `rbench report` writes for that store."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import rbench.worker.cells

from .conftest import invoke_apart

QUICK = ["--weights", "random", "--workers", "0", "--img-size", "32", "--executor", "local"]
BENCH = ["--batch-size", "2", "--warmup-steps", "0", "--bench-steps", "2", "--bench-seconds", "0",
         "--bench-repeats", "1"]


def models_in(path: Path) -> list[str]:
    """The architectures of a file's rows (a row's model may carry a pretrained tag, or name its
    weights: `@random`)."""
    with open(path, newline="") as f:
        return sorted(row["model"].split("@")[0].split(".")[0] for row in csv.DictReader(f))


def csv_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.csv"))
            if "store" not in p.relative_to(folder).parts}


def closing_rows(output: str) -> tuple[int, int]:
    """(rows from this run, rows in --out) of a run's closing line."""
    found = re.search(r"already in the store, in \d+ s; (\d+) row\(s\) from this run, (\d+) in ", output)
    assert found, output
    return int(found[1]), int(found[2])


def test_two_runs_into_one_out_leave_both_models_in_every_file(tmp_path, images):
    out = tmp_path / "out"
    common = [*QUICK, *BENCH, "--bench", "validate,infer,metadata", "--data-dir", str(images), "--out", str(out)]
    first = invoke_apart("run", "-m", "test_efficientnet", *common)
    assert first.exit_code == 0, first.output + first.stderr
    second = invoke_apart("run", "-m", "test_vit", *common)
    assert second.exit_code == 0, second.output + second.stderr

    both = ["test_efficientnet", "test_vit"]
    (benchmark,) = out.glob("benchmark-infer-*.csv")
    for path in (out / "results-imagefolder.csv", out / "metrics-imagefolder.csv", benchmark,
                 out / "detailed" / benchmark.name, out / "model_metadata.csv", out / "model_metadata-in1k.csv"):
        assert models_in(path) == both, path.name
    # each model: a results row, a benchmark row, a metadata row
    assert closing_rows(first.output) == (3, 3)
    assert closing_rows(second.output) == (3, 6)
    again = invoke_apart("run", "-m", "test_vit", *common)
    assert closing_rows(again.output) == (0, 6)

    # exactly what `rbench report` writes for that store, byte for byte
    other = tmp_path / "other"
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(other))
    assert report.exit_code == 0, report.output + report.stderr
    assert len(csv_files(other)) == 6
    assert csv_files(out) == csv_files(other)


def test_a_cell_that_succeeds_later_leaves_no_failure_row_and_other_failures_stay(tmp_path, images, monkeypatch):
    out = tmp_path / "out"
    common = [*QUICK, "--bench", "validate", "--data-dir", str(images), "--out", str(out)]
    failing = {"test_efficientnet", "test_byobnet"}
    create_model = rbench.worker.cells.create_model

    def flaky(name, *args, **kwargs):
        if name in failing:
            raise RuntimeError(f"{name} cannot be built today")
        return create_model(name, *args, **kwargs)

    monkeypatch.setattr(rbench.worker.cells, "create_model", flaky)
    first = invoke_apart("run", "-m", "test_vit,test_efficientnet,test_byobnet", *common)
    assert first.exit_code == 1
    assert models_in(out / "failures.csv") == ["test_byobnet", "test_efficientnet"]

    failing.discard("test_efficientnet")
    retry = invoke_apart("run", "-m", "test_efficientnet", "--retry-failed", *common)
    assert retry.exit_code == 0, retry.output + retry.stderr  # this run's cells all succeeded
    assert models_in(out / "failures.csv") == ["test_byobnet"]  # a cell this run did not touch
    assert models_in(out / "results-imagefolder.csv") == ["test_efficientnet", "test_vit"]
    assert models_in(out / "metrics-imagefolder.csv") == ["test_efficientnet", "test_vit"]

    failing.clear()
    last = invoke_apart("run", "-m", "test_byobnet", "--retry-failed", *common)
    assert last.exit_code == 0, last.output + last.stderr
    assert not (out / "failures.csv").exists()
    assert len(models_in(out / "results-imagefolder.csv")) == 3
