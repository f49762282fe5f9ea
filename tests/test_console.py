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
