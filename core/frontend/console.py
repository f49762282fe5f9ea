"""The console: how the command line shows what rbench does and found. One renderer of a grid's
events (`GridConsole`: live bars on a terminal, a line per cell and progress every 30 s in a
log) for every command that runs cells, and the tables of results. It reads the events and
results that the engine and the reports return; nothing below the front end imports it.
"""

from __future__ import annotations

import time
from typing import Any


def open_console(stderr: bool = False):
    """A rich console (stdout, or stderr) that highlights nothing of its own. In a log (not a
    terminal) it wraps nothing: a long line stays one line, for a person and for `grep`."""
    from rich.console import Console

    console = Console(highlight=False, stderr=stderr)
    console.soft_wrap = not console.is_terminal
    return console


def plain(value) -> str:
    """`value` as text that rich prints as it is: brackets that would read as markup
    (`rbench[corruptions]`, `[1, 3, 224, 224]`) are escaped."""
    from rich.markup import escape

    return escape(str(value))


def number(value, spec: str) -> str:
    """`value` formatted by `spec`, or `-` when there is none."""
    return "-" if value is None else format(value, spec)


def batch_text(ran: int | None, asked: int) -> str:
    """`256`, or `256->64` after backing off, or `256->-` when nothing ran."""
    return str(asked) if ran == asked else f"{asked}->{number(ran, 'd')}"


def table(title: str, columns: tuple[str, ...], right: tuple[str, ...] = ()) -> Shown:
    """A table to print: boxed on a terminal, plain lines in a log (see `Shown`). Cells are
    markup-safe text (`plain`, numbers)."""
    return Shown(title, columns, right)


class Shown:
    """A table that prints as a rich table on a terminal, whose names never end in an ellipsis
    (long ones fold onto the next line), and in a log (CI, nohup, a pipe) as one line a row,
    whatever the width: `title: column=value column=value`, spaces in a column's name made `_`,
    a value with spaces quoted, so that a person and `grep` read every row whole."""

    def __init__(self, title: str, columns: tuple[str, ...], right: tuple[str, ...] = ()):
        self.title, self.columns, self.right = title, columns, right
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def lines(self) -> list[str]:
        """The rows as log lines (the title alone when there is none)."""
        from rich.text import Text

        keys = ["_".join(column.split()) for column in self.columns]
        title = Text.from_markup(self.title).plain
        lines = []
        for cells in self.rows:
            pairs = []
            for key, cell in zip(keys, cells):
                value = " ".join(Text.from_markup(cell).plain.split()) or "-"
                quoted = " " in value or '"' in value
                pairs.append(f"{key}={value}" if not quoted else f'{key}="{value.replace(chr(34), chr(92) + chr(34))}"')
            lines.append(f"{title}: {' '.join(pairs)}")
        return lines or [f"{title}: none"]

    def __rich_console__(self, console, options):
        if console.is_terminal:
            from rich.table import Table

            shown = Table(title=self.title)
            for col in self.columns:
                shown.add_column(col, justify="right" if col in self.right else "left",
                                 overflow="fold" if col != "description" else "ellipsis")
            for cells in self.rows:
                shown.add_row(*cells)
            yield shown
            return
        from rich.segment import Segment

        for line in self.lines():  # segments, not text: rich wraps none of them
            yield Segment(line)
            yield Segment.line()


class GridConsole:
    """The one renderer of a grid's events (`on_start`, `on_event`, as `run` and the engine
    call them). On a terminal, live bars (a grid bar and one per running cell); in a log (CI,
    nohup, a pipe), a line per cell started and done and its progress every 30 s. Notes, skips
    and failures go to stderr. `counts`, `failed` and `held` say what happened; `closing_line`
    sums it up. Use it as a context manager around the run."""

    PROGRESS_EVERY = 30.0  # seconds between progress lines of one cell in a log

    def __init__(self, out, errors, *, executor: str = "local", store_dir=None, clock=time.monotonic):
        self.out, self.errors = out, errors
        self.executor, self.store_dir, self.clock = executor, store_dir, clock
        self.live = out.is_terminal
        self.labels: dict[str, str] = {}
        self.ok = self.held = 0
        self.failed: dict[str, int] = {}  # status -> cells
        self.started = clock()
        self._last_line: dict[str, float] = {}
        self._cell_tasks: dict[str, int] = {}
        self._progress = None
        self._grid_task = None

    def __enter__(self) -> GridConsole:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        self._progress = Progress(*columns, console=self.out, transient=True, disable=not self.live)
        self._progress.__enter__()
        self._grid_task = self._progress.add_task("cells", total=None)
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.__exit__(*exc_info)

    @property
    def ran(self) -> int:
        """Cells that ended in this run, whatever their status."""
        return self.ok + sum(self.failed.values())

    def on_start(self, todo: list, done: int) -> None:
        """The grid's cells to run (`todo`) and how many the store already holds."""
        self.labels.update({cell.key: cell.label for cell in todo})
        self.held = done
        self._progress.update(self._grid_task, total=len(todo))
        where = f", {done} already in the store {self.store_dir}" if done else ""
        self.out.print(f"{len(todo)} cell(s) to run with the {self.executor} executor" + plain(where))

    def on_event(self, event: dict[str, Any]) -> None:
        """One event of a running cell (`rbench.Event`)."""
        from ..worker.jobs import STATUS_SKIPPED

        key = event["key"]
        label = self.labels.get(key, key)
        kind = event["event"]
        if kind == "start":
            self._cell_tasks[key] = self._progress.add_task(plain(f"  {label}"), total=None)
            self._last_line[key] = self.clock()
            if not self.live:
                self.out.print(plain(f"start {label}"))
        elif kind == "progress" and key in self._cell_tasks:
            self._progress.update(self._cell_tasks[key], completed=event["done"], total=event["total"])
            if not self.live and self.clock() - self._last_line.get(key, 0.0) >= self.PROGRESS_EVERY:
                self._last_line[key] = self.clock()
                self.out.print(plain(f"  {label}: {event['done']:,}/{event['total']:,}"))
        elif kind == "note":
            where = f"{label}: " if key else ""
            self.errors.print(f"[yellow]{plain(where + event['message'])}[/]", soft_wrap=True)  # paths stay whole
        elif kind == "done":
            if key in self._cell_tasks:
                self._progress.remove_task(self._cell_tasks.pop(key))
            status = event["status"]
            if status == "ok":
                self.ok += 1
                if not self.live:
                    self.out.print(plain(f"done  {label}"))
            else:
                self.failed[status] = self.failed.get(status, 0) + 1
                if status == STATUS_SKIPPED:  # not the cell's failure: its message says what to do
                    self.errors.print(f"[yellow]skipped[/] {plain(label)}: {plain(event['message'])}", soft_wrap=True)
                else:
                    message = event["message"].splitlines()[0] if event["message"] else ""
                    self.errors.print(f"[red]failed[/] {plain(label)}: {plain(status)}: {plain(message[:300])}",
                                      soft_wrap=True)
            self._progress.update(self._grid_task, advance=1,
                                  description=f"cells ({sum(self.failed.values())} failed)" if self.failed else "cells")

    def closing_line(self) -> str:
        """`N cells: a ok, b failed (why), c already in the store, in T s`."""
        failed = sum(self.failed.values())
        why = f" ({', '.join(f'{n} {status}' for status, n in sorted(self.failed.items()))})" if failed else ""
        return (f"{self.ran + self.held} cells: {self.ok} ok, {failed} failed{why}, {self.held} already in the store, "
                f"in {self.clock() - self.started:.0f} s")


def conformance_table(title: str, rows):
    """Conformance rows (`conformance.conformance_rows`) as a table."""
    columns = ("model", "stack", "top1", "ref top1", "delta", "agree %", "max |dlogit|", "mean |dlogit|", "pass")
    shown = table(title, columns, right=columns[2:-1])
    for row in rows:
        shown.add_row(plain(row["model"]), plain(row["stack"]), number(row["top1"], ".3f"),
                      number(row["reference_top1"], ".3f"), number(row["top1_delta"], "+.3f"),
                      number(row["top1_agreement"], ".2f"), number(row["logit_absdiff_max"], ".3g"),
                      number(row["logit_absdiff_mean"], ".3g"), plain(row["pass"]))
    return shown


def print_results(out, results, written) -> None:
    """The tables of a run's or a report's results, and the files written."""
    if results.validation:
        shown = table("validation", ("view", "model", "img_size", "top1", "top5", "images"),
                       right=("img_size", "top1", "top5", "images"))
        for view, rows in results.validation.items():
            for row in sorted(rows, key=lambda r: (-r["top1"], -r["top5"], r["model"])):
                shown.add_row(plain(view), plain(row["model"]), str(row["img_size"]), f"{row['top1']:.3f}",
                              f"{row['top5']:.3f}", str(row["count"]))
        out.print(shown)
    for view, rows in results.conformance.items():
        out.print(conformance_table(f"conformance against {rows[0]['reference']}: {view}", rows))
    if results.benchmarks:
        columns = ("bench", "backend", "model", "img_size", "batch", "samples/s", "step ms p10/p50/p90", "GMACs",
                   "params (M)", "status")
        shown = table("throughput", columns, right=columns[3:-1])
        for (kind, _), rows in results.benchmarks.items():
            for row in rows:
                shown.add_row(kind, plain(row["backend"]), plain(row["model"]), number(row[f"{kind}_img_size"], "d"),
                              batch_text(row[f"{kind}_batch_size"], row["batch_asked"]),
                              number(row[f"{kind}_samples_per_sec"], ",.1f"),
                              "/".join(number(row[f"step_time_p{p}"], ".2f") for p in (10, 50, 90)),
                              number(row.get("infer_gmacs"), ".2f"), number(row["param_count"], ".2f"),
                              plain(row["status"] if row["status"] != "failed" else f"failed: {row['error']}"))
        out.print(shown)
    if results.metadata:
        print_metadata_notes(out, results.metadata)
    if written:
        out.print("[bold]wrote[/] " + plain(", ".join(str(p) for p in written)))


def print_recipe_coverage(out, rows) -> None:
    """How many of the 1000-class tags `rows` have a training recipe (family and optimizer), and
    how many have each fact of it."""
    from ..worker.recipes import recipe_coverage

    total, known, by_fact = recipe_coverage(rows)
    if not total:
        return
    shown = table("training recipe facts of the 1000-class tags", ("fact", "tags", "share"), right=("tags", "share"))
    for fact, count in by_fact.items():
        shown.add_row(plain(fact), str(count), f"{100 * count / total:.1f}%")
    out.print(shown)
    out.print(f"recipe family and optimizer known for {known} of {total} 1000-class tags "
              f"({100 * known / total:.1f}%); rules and sources: rbench/worker/recipes.csv")


def print_metadata_notes(out, rows) -> None:
    """Tags that could not be counted on the meta device, then tags that no name rule knows."""
    from ..worker.metadata import unknown_tags

    failed = [row for row in rows if row.get("note")]
    if failed:
        out.print(f"[yellow]{len(failed)} tag(s) not fully counted on the meta device:[/]")
        for row in failed:
            out.print(f"  {plain(row['model'])}: {plain(row['note'])}")
    unknown = unknown_tags(rows)
    if unknown:
        out.print(f"[yellow]{len(unknown)} tag(s) with unknown pretraining data or technique "
                      "(add rules to rbench/worker/metadata.py):[/] " + plain(", ".join(unknown)))
