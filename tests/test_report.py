"""The CSV formats of timm's results folder, checked against hand-written files."""

from __future__ import annotations

import pytest

from rbench.report.results import benchmark_table, metadata_table, validation_table, write_csv


def row(model, top1, top5, params=25.557032, img=224):
    return {"model": model, "img_size": img, "top1": top1, "top1_err": 100 - top1, "top5": top5,
            "top5_err": 100 - top5, "param_count": params, "crop_pct": 0.875, "interpolation": "bicubic"}


def test_base_file_format_sort_and_quoting(tmp_path):
    rows = [row("b.x", 80.0, 95.0), row("a.x", 80.0, 95.0), row("big.x", 81.12345, 90.0, params=1014.4512),
            row("c.x", 80.0, 96.0)]
    path = write_csv(validation_table(rows), tmp_path / "results-imagenet.csv")
    assert path.read_text() == (
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
        'big.x,224,81.123,18.877,90.000,10.000,"1,014.45",0.875,bicubic\n'
        "c.x,224,80.000,20.000,96.000,4.000,25.56,0.875,bicubic\n"
        "a.x,224,80.000,20.000,95.000,5.000,25.56,0.875,bicubic\n"
        "b.x,224,80.000,20.000,95.000,5.000,25.56,0.875,bicubic\n"
    )


def test_test_file_diffs_against_base_ranks_on_sorted_frames(tmp_path):
    base = [row("m1", 80.0, 95.0), row("m2", 79.0, 94.0), row("m3", 78.0, 93.0), row("m4", 77.0, 92.0, img=288)]
    test = [row("m1", 60.0, 80.0), row("m3", 65.5, 85.25), row("m2", 61.0, 80.0), row("m4", 50.0, 70.0, img=288),
            row("new", 70.0, 90.0)]
    text = write_csv(validation_table(test, base), tmp_path / "results-sketch.csv").read_text()
    # Test ranks: new 0, m3 1, m2 2, m1 3, m4 4. Base ranks: m1 0, m2 1, m3 2, m4 3.
    assert text.splitlines() == [
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation,top1_diff,top5_diff,rank_diff",
        "new,224,70.000,30.000,90.000,10.000,25.56,0.875,bicubic,,,",
        "m3,224,65.500,34.500,85.250,14.750,25.56,0.875,bicubic,-12.500,-7.750,+1",
        "m2,224,61.000,39.000,80.000,20.000,25.56,0.875,bicubic,-18.000,-14.000,-1",
        "m1,224,60.000,40.000,80.000,20.000,25.56,0.875,bicubic,-20.000,-15.000,-3",
        "m4,288,50.000,50.000,70.000,30.000,25.56,0.875,bicubic,-27.000,-22.000,-1",
    ]


def test_diff_of_equal_values_is_plus_zero_and_uses_written_decimals(tmp_path):
    base = [row("m", 80.0004, 95.0)]
    test = [row("m", 79.9996, 95.0)]  # both write as 80.000
    text = write_csv(validation_table(test, base), tmp_path / "r.csv").read_text()
    assert text.splitlines()[1].endswith(",+0.000,+0.000,0")


def test_benchmark_table_rounds_and_sorts_by_rate(tmp_path):
    rows = [
        {"model": "slow", "infer_img_size": 224, "infer_samples_per_sec": 100.123456, "infer_step_time": 2556.98765,
         "infer_batch_size": 256, "param_count": 25.557032, "infer_gmacs": 4.1095, "infer_macts": 11.1149},
        {"model": "fast", "infer_img_size": 160, "infer_samples_per_sec": 9000.005, "infer_step_time": 28.4444,
         "infer_batch_size": 256, "param_count": 1.5, "infer_gmacs": None, "infer_macts": None},
    ]
    text = write_csv(benchmark_table(rows), tmp_path / "b.csv").read_text()
    assert text.splitlines() == [
        "model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs,infer_macts",
        "fast,160,9000.0,28.444,256,1.5,,",
        "slow,224,100.12,2556.988,256,25.56,4.11,11.11",
    ]


def test_metadata_table_one_row_per_model_sorted(tmp_path):
    rows = [{"model": "z.in1k", "pretrain": "in1k"}, {"model": "a.in21k_ft_in1k", "pretrain": "in21k"},
            {"model": "z.in1k", "pretrain": "in1k"}]
    text = write_csv(metadata_table(rows), tmp_path / "m.csv").read_text()
    assert text == "model,pretrain\na.in21k_ft_in1k,in21k\nz.in1k,in1k\n"


def test_diffs_with_ties_missing_models_and_two_image_sizes(tmp_path):
    base = [row("tie-b", 80.0, 95.0), row("tie-a", 80.0, 95.0), row("m", 79.0, 94.5), row("m", 81.0, 95.5, img=288),
            row("only-base", 70.0, 90.0)]
    test = [row("tie-a", 50.0, 75.0), row("tie-b", 50.0, 75.0), row("m", 52.0, 76.0), row("m", 49.0, 74.0, img=288),
            row("only-test", 60.0, 80.0)]
    # Base sorted: m@288 (0), tie-a (1), tie-b (2), m@224 (3), only-base (4).
    # Test sorted: only-test (0), m@224 (1), tie-a (2), tie-b (3), m@288 (4).
    text = write_csv(validation_table(test, base), tmp_path / "r.csv").read_text()
    assert [line.split(",", 1)[0] + "@" + line.split(",")[1] + "," + ",".join(line.split(",")[-3:])
            for line in text.splitlines()[1:]] == [
        "only-test@224,,,",
        "m@224,-27.000,-18.500,+2",
        "tie-a@224,-30.000,-20.000,-1",
        "tie-b@224,-30.000,-20.000,-1",
        "m@288,-32.000,-21.500,-4",
    ]


PUBLISHED_BASE = (
    "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
    'giant.x,560,89.792,10.208,98.992,1.008,"1,014.45",1.000,bicubic\n'
    "b.y,224,80.114,19.886,95.010,4.990,25.56,0.950,bicubic\n"
    "a.y,224,79.500,20.500,94.600,5.400,25.56,0.875,bilinear\n"
    "c.y,224,79.500,20.500,94.600,5.400,11.69,0.875,bilinear\n"
)
# timm's own files sometimes put img_size after param_count: columns are read by name.
PUBLISHED_TEST = (
    "model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation,top1_diff,top5_diff,rank_diff\n"
    "b.y,70.000,30.000,90.000,10.000,25.56,224,0.950,bicubic,-10.114,-5.010,+1\n"
    'giant.x,69.000,31.000,91.000,9.000,"1,014.45",560,1.000,bicubic,-20.792,-7.992,-1\n'
)


def test_report_rewrites_an_imported_base_file_byte_for_byte(tmp_path):
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    published = tmp_path / "published"
    published.mkdir()
    (published / "results-imagenet.csv").write_text(PUBLISHED_BASE)
    (published / "results-sketch.csv").write_text(PUBLISHED_TEST)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["report", "--out", str(out), "--import", str(published)])
    assert result.exit_code == 0, result.output
    assert (out / "results-imagenet.csv").read_text() == PUBLISHED_BASE
    assert (out / "results-sketch.csv").read_text().splitlines() == [
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation,top1_diff,top5_diff,rank_diff",
        "b.y,224,70.000,30.000,90.000,10.000,25.56,0.950,bicubic,-10.114,-5.010,+1",
        'giant.x,560,69.000,31.000,91.000,9.000,"1,014.45",1.000,bicubic,-20.792,-7.992,-1',
    ]


def test_report_rebuilds_from_the_store_and_ranks_among_imported_rows(tmp_path):
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--bench", "validate,metadata", "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = {p.name: p.read_text() for p in out.glob("*.csv")}
    for p in out.glob("*.csv"):
        p.unlink()
    rebuilt = tmp_path / "rebuilt"
    result = runner.invoke(main, ["report", "--store", str(out / "store"), "--out", str(rebuilt)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_text() for p in rebuilt.glob("*.csv")} == first

    published = tmp_path / "results-synthetic.csv"
    published.write_text(PUBLISHED_BASE)
    merged = tmp_path / "merged"
    result = runner.invoke(main, ["report", "--store", str(out / "store"), "--out", str(merged), "--import", str(published)])
    assert result.exit_code == 0, result.output
    models = [line.split(",")[0] for line in (merged / "results-synthetic.csv").read_text().splitlines()[1:]]
    assert models[:4] == ["giant.x", "b.y", "a.y", "c.y"] and len(models) == 7


def test_report_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    bad = tmp_path / "results-x.csv"
    bad.write_text("model,top1\nm,1.0\n")
    for args, message in [
        (["--store", str(tmp_path / "nostore")], "store"),
        (["--import", str(bad)], "lacks the column(s) img_size"),
        (["--import", str(tmp_path / "missing.csv")], "does not exist"),
    ]:
        result = CliRunner().invoke(main, ["report", "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert message in line


def test_a_stores_own_benchmark_row_wins_over_an_imported_row_of_its_model(tmp_path):
    from rbench.report.results import Results, write_reports

    from .conftest import csv_rows

    def entry(model, rate):
        return {"table": "benchmark", "kind": "infer", "tag": "t",
                "row": {"model": model, "infer_samples_per_sec": rate, "status": "ok"}}

    results = Results()
    results.add(entry("own", 10.0))
    results.add(entry("own", 99.0), imported=True)  # left out: the store has its own row
    results.add(entry("zoo", 20.0), imported=True)
    results.add(entry("later", 30.0), imported=True)
    results.add(entry("later", 5.0))  # the store's row replaces the imported one
    write_reports(results, tmp_path)
    plain = {r["model"]: r["infer_samples_per_sec"] for r in csv_rows(tmp_path / "benchmark-infer-t.csv")}
    assert plain == {"own": "10.0", "zoo": "20.0", "later": "5.0"}
    detailed = [r["model"] for r in csv_rows(tmp_path / "detailed" / "benchmark-infer-t.csv")]
    assert sorted(detailed) == ["later", "own"]  # this store's rows, and only those
    assert any("imported row of own is left out" in note for note in results.notes)


class CountedName(str):
    """A model name that counts how often it is hashed or compared: the work of adding rows."""

    operations = 0

    def __hash__(self):
        CountedName.operations += 1
        return str.__hash__(self)

    def __eq__(self, other):
        CountedName.operations += 1
        return str.__eq__(self, other)

    def __ne__(self, other):
        CountedName.operations += 1
        return str.__ne__(self, other)


def imported_entries(n: int) -> list[dict]:
    """n imported rows of each kind (results, benchmark, metadata), one model in 50 twice."""
    entries = []
    for i in range(n):
        model = CountedName(f"m{i % (n - n // 50)}.x")
        entries.append({"table": "validation", "view": "imagenet", "row": {**row(model, 80.0, 95.0)}})
        entries.append({"table": "benchmark", "kind": "infer", "tag": "t",
                        "row": {"model": model, "infer_samples_per_sec": 10.0 + i}})
        entries.append({"table": "metadata", "row": {"model": model, "pretrain": "in1k"}})
    return entries


def test_adding_imported_rows_takes_linear_work():
    """Adding 100,000 imported rows of each kind takes ten times the name hashes and comparisons
    of 10,000 (a scan of the rows so far for each new one would take a hundred times)."""
    from rbench.report.results import Results

    work = {}
    for n in (10_000, 100_000):
        entries = imported_entries(n)
        results = Results()
        CountedName.operations = 0
        for entry in entries:
            results.add(entry, imported=True)
        work[n] = CountedName.operations
        assert len(results.validation["imagenet"]) == n - n // 50  # the repeated models: one row each
    assert work[100_000] <= 11 * work[10_000], work
    assert work[100_000] <= 30 * 3 * 100_000, work


def reference_add(state: dict, entry: dict, imported: bool) -> None:
    """The rules of `Results.add` for results rows, kept as simply as they can be said: per
    view, one row per (model, img_size), the later one, except that an imported row never
    replaces this store's own; own rows are also the view's metric rows."""
    view, r = entry["view"], entry["row"]
    key = (r["model"], r["img_size"])
    rows, own = state.setdefault(view, ({}, set()))
    if key in rows and imported and key in own:
        return
    rows[key] = r
    (own.discard if imported else own.add)(key)


def test_results_rows_follow_the_rules_under_random_additions():
    """Random sequences of own and imported rows with repeats: the rows kept, the metric rows and
    the imported marks are those of the rules (`reference_add`)."""
    import random

    from rbench.report.results import Results, imported_rows

    generator = random.Random(5)
    for _ in range(300):
        results, state = Results(), {}
        for step in range(generator.randint(1, 30)):
            view = generator.choice(["v", "w"])
            r = {**row(f"m{generator.randint(0, 5)}", 80.0, 95.0, img=generator.choice([224, 288])), "step": step}
            imported = generator.random() < 0.5
            entry = {"table": "validation", "view": view, "row": r}
            results.add(entry, imported=imported)
            reference_add(state, entry, imported)
        for view, (rows, own) in state.items():
            assert sorted(r["step"] for r in results.validation[view]) == sorted(r["step"] for r in rows.values())
            assert sorted(s.row["step"] for s in results.metric_rows.get(view, [])) == sorted(
                rows[k]["step"] for k in own)
            marked = imported_rows(results).get(f"results-{view}.csv", set())
            assert marked == {(m, str(s)) for m, s in rows if (m, s) not in own}


GOOD_LINE = "m.a,224,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n"


@pytest.mark.parametrize(("lines", "message"), [
    (GOOD_LINE.encode() + "caf\u00e9.a,224,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n".encode("latin-1"),
     "line 3: byte 0xe9 is not UTF-8; --import reads UTF-8 CSV files"),
    (("x" * 200_000 + ",224,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n").encode(), "line 2: a field over 128 KB"),
    (b"m.a,99999999999999999999,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n",
     "line 2: img_size '99999999999999999999' is not a whole number from 0 to 2,147,483,647"),
    (GOOD_LINE.encode() + b"m.b,224,nan,20.000,95.000,5.000,1.00,0.875,bicubic\n",
     "line 3: top1 'nan' is not a finite number from 0 to 100"),
    (b"m.b,224,80.000,20.000,inf,5.000,1.00,0.875,bicubic\n", "line 2: top5 'inf' is not a finite number from 0 to 100"),
    (b"m.b,224,80.000,20.000,95.000,5.000,-1,0.875,bicubic\n", "line 2: param_count '-1' is not a finite number of at least 0"),
    (b"m\x00b,224,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n", "line 2: model 'm\\x00b' holds a NUL byte"),
    (b"\"=cmd|' /C calc'!A0\",224,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n",
     "line 2: model \"=cmd|' /C calc'!A0\" starts with '=', which a spreadsheet runs as a formula"),
    (b"@SUM(A1),224,80.000,20.000,95.000,5.000,1.00,0.875,bicubic\n", "starts with '@'"),
], ids=["not-utf8", "field-over-128k", "huge-img-size", "top1-nan", "top5-inf", "negative-params", "nul", "formula",
        "at-formula"])
def test_a_bad_imported_line_is_one_line_naming_it(lines, message, tmp_path):
    """Each bad line of an imported file is one line naming the file and the line, exit 2, and
    nothing is written (before, some were tracebacks, and NaN, NUL and formulas went into the CSVs)."""
    from .conftest import invoke_apart

    published = tmp_path / "results-imagenet.csv"
    published.write_bytes(b"model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n" + lines)
    result = invoke_apart("report", "--out", str(tmp_path / "o"), "--import", str(published))
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"rbench: error: {published} line ") and message in line, line
    assert not (tmp_path / "o" / "results-imagenet.csv").exists()


def test_an_import_with_a_byte_order_mark_and_no_store_is_read(tmp_path):
    """A CSV saved with a UTF-8 byte-order mark (as spreadsheets save it) is read as without it,
    and a --store that does not exist is no records, as the documentation says, with --import."""
    from .conftest import invoke_apart

    published = tmp_path / "results-imagenet.csv"
    published.write_bytes("\ufeff".encode() + PUBLISHED_BASE.encode())
    result = invoke_apart("report", "--store", str(tmp_path / "no-store"), "--out", str(tmp_path / "o"),
                          "--import", str(published))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "o" / "results-imagenet.csv").read_text() == PUBLISHED_BASE
    assert not (tmp_path / "no-store").exists()
    nothing = invoke_apart("report", "--store", str(tmp_path / "no-store"), "--out", str(tmp_path / "o"))
    assert nothing.exit_code == 2 and "store" in nothing.stderr and "does not exist" in nothing.stderr
