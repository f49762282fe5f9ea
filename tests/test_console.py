"""The one renderer of a grid's events: what a log shows (a line per cell, progress every 30 s of
the clock it is given, failures and skips on stderr) and the closing count."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from rbench.frontend.console import GridConsole


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_line_per_cell_progress_every_30_s_and_the_closing_count():
    out, err = io.StringIO(), io.StringIO()
    clock = Clock()
    cells = [SimpleNamespace(key=k, label=f"validate {k} on imagefolder on cpu") for k in ("a", "b", "c")]
    with GridConsole(Console(file=out, width=200), Console(file=err, width=200), executor="local",
                     store_dir="S", clock=clock) as grid:
        grid.on_start(cells, done=2)
        grid.on_event({"event": "start", "key": "a"})
        for done, after in ((10, 29.0), (20, 30.0), (30, 10.0), (40, 25.0)):  # seconds since the last line
            clock.now += after
            grid.on_event({"event": "progress", "key": "a", "done": done, "total": 40})
        grid.on_event({"event": "done", "key": "a", "status": "ok", "message": ""})
        grid.on_event({"event": "start", "key": "b"})
        grid.on_event({"event": "done", "key": "b", "status": "oom", "message": "CUDA out of memory\nmore"})
        grid.on_event({"event": "done", "key": "c", "status": "skipped", "message": "its listing is damaged"})
        clock.now += 7.4
        closing = grid.closing_line()
    lines = out.getvalue().splitlines()
    assert lines[0] == "3 cell(s) to run with the local executor, 2 already in the store S"
    # 29 s: no line; 29 + 30 = 59 s since the start line: a line; then 10 s, 35 s: one more
    assert [line for line in lines if line.startswith("  validate a")] == [
        "  validate a on imagefolder on cpu: 20/40", "  validate a on imagefolder on cpu: 40/40"]
    assert "start validate a on imagefolder on cpu" in lines and "done  validate a on imagefolder on cpu" in lines
    assert "done  validate b on imagefolder on cpu" not in lines
    errors = err.getvalue().splitlines()
    assert errors == ["failed validate b on imagefolder on cpu: oom: CUDA out of memory",
                      "skipped validate c on imagefolder on cpu: its listing is damaged"]
    assert (grid.ok, grid.held, grid.ran, grid.failed) == (1, 2, 3, {"oom": 1, "skipped": 1})
    assert closing == "5 cells: 1 ok, 2 failed (1 oom, 1 skipped), 2 already in the store, in 101 s"


def _benchmark_results(model: str):
    """Results holding one validation row and one infer row of `model`, as `print_results` gets them."""
    from rbench.report.results import Results

    results = Results()
    results.validation["imagefolder"].append({"model": model, "img_size": 160, "top1": 12.5, "top5": 50.0,
                                             "count": 8})
    row = {"model": model, "backend": "cpu+channels-last", "infer_img_size": 160, "infer_batch_size": 64,
           "batch_asked": 256, "infer_samples_per_sec": 1234.56, "step_time_p10": 101.234,
           "step_time_p50": 202.346, "step_time_p90": 303.456, "infer_gmacs": 1.5, "param_count": 22.1,
           "status": "failed", "error": "out of memory at batch 256, backed off"}
    results.benchmarks[("infer", "fp32-nchw-cpu")].append(row)
    return results


def test_a_log_gets_each_table_row_as_one_plain_line_whatever_the_width(capsys, monkeypatch):
    """Not a terminal (CI, nohup, a pipe): every row of every table is one line of `column=value`
    pairs, never wrapped at the console's width, with markup-escaped names as they are."""
    from rbench.frontend.console import open_console, plain, print_results

    monkeypatch.setenv("COLUMNS", "40")
    model = "vit_base_patch16_clip_224.openai_ft_in12k_in1k@ckpt-0123456789ab[v2]"
    console = open_console()
    assert console.width == 40 and not console.is_terminal
    print_results(console, _benchmark_results(model), written=[])
    lines = capsys.readouterr().out.splitlines()
    validation = [line for line in lines if line.startswith("validation: ")]
    throughput = [line for line in lines if line.startswith("throughput: ")]
    assert validation == [f"validation: view=imagefolder model={model} img_size=160 top1=12.500 top5=50.000 "
                          "images=8"]
    (line,) = throughput
    assert len(line) > 40
    assert " step_ms_p10/p50/p90=101.23/202.35/303.46 " in line
    assert " batch=256->64 " in line and f" model={model} " in line
    assert line.endswith(' status="failed: out of memory at batch 256, backed off"')
    assert not any("│" in line or "┃" in line for line in lines)
    # The same table on a terminal is the boxed one.
    boxed = io.StringIO()
    print_results(Console(file=boxed, width=200, force_terminal=True), _benchmark_results(model), written=[])
    assert "┃" in boxed.getvalue() and "step_ms_p10" not in boxed.getvalue()
    assert plain(model) != model  # the cells given were escaped; the lines show the name as it is


def test_the_command_lines_console_wraps_nothing_in_a_log(capsys):
    from rbench.frontend.console import open_console

    long = "rbench run: " + " | ".join(f"data set number {i}" for i in range(20))
    open_console().print(long)
    assert capsys.readouterr().out == long + "\n"
