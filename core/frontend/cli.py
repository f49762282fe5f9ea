"""The `rbench` command line."""

from __future__ import annotations

from pathlib import Path

import click

from .console import (GridConsole, conformance_table, open_console, plain, print_metadata_notes, print_recipe_coverage,
                      print_results, table)
from ..version import __version__
from ..errors import PluginError, RbenchError
from ..worker.input_cache import DEFAULT_LIMIT
from ..parent.plan import RUN_NUMBERS, NumberRange

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RbenchGroup(click.Group):
    """A click group that prints an `RbenchError`, or a full or unwritable disk, as one line and exits 2."""

    def invoke(self, ctx: click.Context):
        from ..files import DISK_ERRNOS

        try:
            return super().invoke(ctx)
        except RbenchError as exc:
            click.echo(f"rbench: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            click.echo(f"rbench: error: {exc.strerror} writing {exc.filename or 'a file'}; what finished is kept: "
                       "free space (or fix the folder's permissions) and run the same command again", err=True)
            ctx.exit(2)


class ExecutorFlagsCommand(click.Command):
    """A command that also takes the flags executors declare (`ExecutorOption.flag`, such as
    `--ray-address`), each passed to its callback under `executor_flag_name(flag)`."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from ..registry import get_registry

        params = super().get_params(ctx)
        try:
            registry = get_registry()
        except RbenchError:  # the command loads it again and says what is wrong; --help still works
            return params
        taken = {opt for param in params for opt in (*param.opts, *param.secondary_opts)}
        return params + [
            click.Option([option.flag, executor_flag_name(option.flag)], metavar="VALUE",
                         help=f"{option.help} (--executor {spec.name}; as --executor-option {option.name}=VALUE)")
            for spec, option in registry.executor_flags() if option.flag not in taken  # a clash: see executor_settings
        ]


def executor_flag_name(flag: str) -> str:
    """The callback argument of an executor's flag: `--ray-address` -> `executor_flag_ray_address`."""
    return "executor_flag_" + flag.lstrip("-").replace("-", "_")


def executor_settings(ctx: click.Context, registry, executor: str, given: tuple[str, ...],
                      flags: dict[str, str | None]) -> dict[str, str]:
    """The settings of `executor` from `--executor-option KEY=VALUE` and the executors' own flags;
    a flag of another executor than the one that runs, or one that clashes with an option of
    the command, is an error."""
    settings: dict[str, str] = {}
    for value in given:
        key, sep, setting = value.partition("=")
        if not (sep and key.strip()):
            raise RbenchError(f"--executor-option {value!r}: expected KEY=VALUE, for example address=HOST:PORT")
        settings[key.strip()] = setting
    own = {opt for param in ctx.command.params for opt in (*param.opts, *param.secondary_opts)}
    for spec, option in registry.executor_flags():
        if option.flag in own:
            raise PluginError(f"executor {spec.name!r} declares the flag {option.flag}, which is an option of "
                              f"rbench {ctx.command.name} itself; rename it in its ExecutorOption")
        value = flags.get(executor_flag_name(option.flag))
        if value is None:
            continue
        if spec.name != executor:
            raise RbenchError(f"{option.flag} is an option of the {spec.name} executor; pass --executor {spec.name} "
                              f"too, or leave it out")
        settings.setdefault(option.name, value)
    return settings


class Number(click.ParamType):
    """A numeric option's value, checked by its range (`plan.NumberRange`): anything else is an
    `RbenchError`: one line, exit 2, that gives the range."""

    def __init__(self, allowed):
        self.allowed = allowed
        self.name = "integer" if allowed.kind is int else "number"

    def convert(self, value, param, ctx):
        return self.allowed.check(value, param.opts[0] if param is not None and param.opts else "value")


def run_number(name: str) -> Number:
    """The click type of `rbench run`'s numeric option `name` (`plan.RUN_NUMBERS`)."""
    return Number(RUN_NUMBERS[name])


def _data_paths(values: tuple[str, ...]) -> dict[str, Path]:
    paths = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise RbenchError(f"--data {value!r}: expected NAME=PATH, for example --data imagenet=/data/val")
        paths[name.strip()] = Path(path).expanduser()
    return paths


def _data_options(values: tuple[str, ...]) -> dict[str, dict[str, str]]:
    options: dict[str, dict[str, str]] = {}
    for value in values:
        key, sep, setting = value.partition("=")
        name, dot, option = key.partition(".")
        if not (sep and dot and name and option):
            raise RbenchError(f"--data-option {value!r}: expected NAME.KEY=VALUE, for example imagenet.labels=/data/LOC_val_solution.csv")
        options.setdefault(name.strip(), {})[option.strip()] = setting
    return options


metrics_option = click.option(
    "--metrics", "metric_names", multiple=True, metavar="NAMES",
    help="Metrics to score each view with (see `rbench list metrics`), comma-separated. Their columns go in "
         "metrics-<view>.csv; accuracy's also fill results-<view>.csv. [default: every loaded metric]")

cache_dir_option = click.option(
    "--cache-dir", type=click.Path(path_type=Path), envvar="RBENCH_INPUT_CACHE",
    help="Folder of the decoded-input cache: each data set's images resized and cropped once per eval "
         "geometry, for every later model [env: RBENCH_INPUT_CACHE]. [default: inputs/ in the rbench cache "
         "folder, $RBENCH_CACHE_DIR or ~/.cache/rbench]")

html_option = click.option(
    "--html", type=click.Path(path_type=Path), metavar="DIR",
    help="Also write an offline HTML site of the CSVs (DIR/index.html: sortable tables, plots) and the "
         "plots as PNG and SVG (DIR/plots/); needs rbench[html].")


@click.group(cls=RbenchGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="rbench")
def main() -> None:
    """Accuracy, robustness and throughput benchmarks for timm image classifiers.

    `rbench run` with no options runs the embedded default suite: timm's tiny test models with
    random weights on a generated data set, on the best backend here.
    """
    from ..worker.jobs import keep_sigint_ignored

    keep_sigint_ignored()


@main.command(cls=ExecutorFlagsCommand, context_settings=CONTEXT)
@click.option("-m", "--models", multiple=True, metavar="NAMES",
              help="timm names, globs ('resnet*'), 'all', or @FILE; comma-separated or repeated. "
                   "Default: the embedded suite (tiny test models, random weights).")
@click.option("-d", "--datasets", multiple=True, metavar="NAMES",
              help="Data set sources to validate on (see `rbench list datasets`). Default: those named by "
                   "--data/--data-dir, else synthetic.")
@click.option("-b", "--backends", multiple=True, metavar="STACKS",
              help="Backend stacks, e.g. cpu, cuda-amp+channels-last, cuda-amp+compile:max-autotune (a member's "
                   "option after a colon; see `rbench list backends`). Each validates and benchmarks; the "
                   "first is the reference of conformance-<view>.csv. Default: the best available.")
@click.option("--bench", "benches", multiple=True, metavar="KINDS",
              help="What to run: validate, infer, train, latency, metadata (comma-separated). "
                   "Default: validate, infer, metadata.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Folder for the result CSVs.")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="RBENCH_DATA_ROOT",
              help="Folder holding the data sets in their default folders [env: RBENCH_DATA_ROOT].")
@click.option("--data", "data", multiple=True, metavar="NAME=PATH", help="Folder of one data set, overriding --data-root.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Folder of class subfolders for the 'imagefolder' data set.")
@click.option("--data-option", "data_option", multiple=True, metavar="NAME.KEY=VALUE",
              help="A setting for one data set's plugin, e.g. imagenet.labels=LOC_val_solution.csv.")
@click.option("--store", type=click.Path(path_type=Path), help="Folder of per-cell result records. [default: OUT/store]")
@click.option("--batch-size", type=run_number("batch_size"), help="Batch size for validation and benchmarks. [default: 256; 32 for the embedded suite]")
@click.option("--workers", type=run_number("workers"),
              help="Data loader worker processes, and metadata processes (0: this process). [default: CPU count, at most 8]")
@click.option("--img-size", type=run_number("img_size"), help="Evaluate at this square size instead of the model's test size.")
@click.option("--weights", default=None, metavar="pretrained|random|PATH",
              help="Model weights: pretrained (timm's, from the hub cache), random (seeded by model name), "
                   "or a .safetensors / torch checkpoint. [default: pretrained; random for the embedded suite]")
@click.option("--weights-name", default=None, metavar="NAME",
              help="The model column of the rows of --weights (a checkpoint or random), for one model; "
                   "default: derived (`<architecture>@ckpt-<content hash>`, `<model>@random`).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow a checkpoint that needs full unpickling (can run code).")
@click.option("--allow-partial", is_flag=True, help="Run on data sets with missing classes or images.")
@click.option("--warmup-steps", type=run_number("warmup_steps"), help="Benchmark warm-up steps, the first call included. [default: 10]")
@click.option("--bench-steps", type=run_number("bench_steps"), help="Benchmark: time at least this many steps. [default: 40]")
@click.option("--bench-seconds", type=run_number("bench_seconds"), help="Benchmark: and at least this many seconds. [default: 5]")
@click.option("--bench-repeats", type=run_number("bench_repeats"), metavar="N",
              help="Benchmark: run the timed loop N times and state the spread between them. "
                   "[default: 3 when the first loop took under 3 s, else 1]")
@click.option("--latency-queries", type=run_number("latency_queries"), metavar="N",
              help="Latency: time at least N queries, one at a time. [default: 1024; 100 for the embedded suite]")
@click.option("--latency-seconds", type=run_number("latency_seconds"), metavar="SECONDS",
              help="Latency: and at least this many seconds. [default: 10; 1 for the embedded suite]")
@click.option("--latency-batch-size", type=run_number("latency_batch_size"), metavar="N",
              help="Latency: images a query. [default: 1]")
@click.option("--no-retry", is_flag=True,
              help="Benchmark: do not back off to a smaller batch when one does not fit (like-for-like tables).")
@click.option("--executor", metavar="NAME",
              help="How cells run: local (this process), subprocess (a fresh process per model), ray, or a "
                   "plugin's (`rbench list executors`). [default: subprocess with benchmarks, else local]")
@click.option("--executor-option", "executor_option", multiple=True, metavar="KEY=VALUE",
              help="A setting of the executor, e.g. address=HOST:PORT for ray (see `rbench list executors`).")
@click.option("--cell-timeout", type=run_number("cell_timeout"), metavar="SECONDS",
              help="Fail a cell that runs longer than this.")
@cache_dir_option
@click.option("--cache-size", metavar="SIZE", default=f"{DEFAULT_LIMIT // 1000**3}GB", show_default=True,
              help="Size limit of the decoded-input cache; an entry that would pass it is not written and "
                   "that pass decodes every image.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the decoded-input cache.")
@metrics_option
@click.option("--limit", type=run_number("limit"), metavar="N",
              help="Validate on the first N images of each data set only, for a quick look (rows marked partial).")
@click.option("--keep", "keep", multiple=True, metavar="compact|scores|NAME=scores",
              help="What validation keeps of each prediction: compact (top-5, the label's log-probability; "
                   "about 50 bytes a sample) or scores (also the log-probabilities over every class, float16, "
                   "compressed: about 1.6 KB a sample at 1000 classes), so that views declared after the run "
                   "(a class subset, a label mapping) can be scored. NAME=scores for one data set; repeatable. "
                   "[default: compact]")
@click.option("--dry-run", is_flag=True, help="Print the grid (each cell, done or pending, its images) and exit.")
@click.option("--force", is_flag=True, help="Redo every cell, even those the store already holds.")
@click.option("--retry-failed", is_flag=True, help="Run again the cells that failed in an earlier run.")
@html_option
def run(models, datasets, backends, benches, out, data_root, data, data_dir, data_option, store, batch_size, workers,
        img_size, weights, weights_name, trust_checkpoint, allow_partial, warmup_steps, bench_steps, bench_seconds, bench_repeats,
        latency_queries, latency_seconds, latency_batch_size, no_retry,
        executor, executor_option, cell_timeout, cache_dir, cache_size, no_cache, metric_names, limit, keep, dry_run, force,
        retry_failed, html, **executor_flags) -> None:
    """Validate and benchmark models; write the CSVs of timm's results folder."""
    from dataclasses import replace

    from ..parent.api import evaluation_options
    from ..parent.plan import check_out_dir, make_plan
    from ..registry import get_registry
    from ..report.site import check_site_dir
    from ..worker.input_cache import parse_size

    console = open_console()
    registry = get_registry()
    options = evaluation_options(
        models, datasets=datasets, backends=backends, bench=benches, out=out, registry=registry,
        data=_data_paths(data), data_dir=data_dir, data_root=data_root, data_options=_data_options(data_option),
        store=store, batch_size=batch_size, workers=workers, img_size=img_size, weights=weights,
        weights_name=weights_name, trust_checkpoint=trust_checkpoint, allow_partial=allow_partial,
        warmup_steps=warmup_steps, bench_steps=bench_steps, bench_seconds=bench_seconds, bench_repeats=bench_repeats,
        latency_queries=latency_queries, latency_seconds=latency_seconds, latency_batch_size=latency_batch_size,
        retry=not no_retry, executor=executor, cell_timeout=cell_timeout, cache=not no_cache, cache_dir=cache_dir,
        cache_size=parse_size(cache_size, "--cache-size"), metrics=metric_names, limit=limit, keep=keep)
    options = replace(options, executor_options=executor_settings(click.get_current_context(), registry,
                                                                  options.executor, executor_option, executor_flags))
    check_out_dir(out)
    if html is not None:
        check_site_dir(html, out)
    plan = make_plan(options, registry)
    if dry_run:
        _print_grid(plan, console, force=force, retry_failed=retry_failed)
        return
    _run_and_report(plan, registry, console, embedded=not models, force=force, retry_failed=retry_failed, html=html)


def _print_grid(plan, console, force: bool, retry_failed: bool) -> None:
    """The cells a run would run (`--dry-run`), each with its state in the store and its images."""
    from ..parent.engine import held_cells
    from ..parent.plan import plan_cells
    from ..store import Store

    cells = plan_cells(plan)
    store = Store(plan.options.store_dir)
    if not force and store.root.is_dir():
        cells, held = held_cells(cells, store)
    else:
        held = {}
    images = {s.name: len(s.samples) for s in plan.sources}
    shown = table(f"grid: {len(cells)} cell(s)", ("cell", "state", "images"), right=("images",))
    pending_images = 0
    states: dict[str, int] = {}
    for cell in cells:
        record = held.get(cell.key)
        state = "pending" if record is None else "done" if record.ok else f"failed: {record.status}"
        if state.startswith("failed") and retry_failed:
            state += " (retried)"
        count = images.get(cell.source) if cell.kind == "validate" else None
        if count and (record is None or state.endswith("(retried)")):
            pending_images += count
        states[state.split(":")[0]] = states.get(state.split(":")[0], 0) + 1
        shown.add_row(plain(cell.label), plain(state), f"{count:,}" if count else "-")
    console.print(shown)
    console.print(", ".join(f"{n} {state}" for state, n in sorted(states.items()))
                  + f"; {pending_images:,} image(s) to validate")


def _run_and_report(plan, registry, console, embedded: bool, force: bool, retry_failed: bool, html: Path | None) -> None:
    from ..parent.api import run_plan
    from ..parent.engine import Interrupted

    options = plan.options
    errors = open_console(stderr=True)
    title = "embedded default suite" if embedded else f"{len(plan.models)} model(s)"
    console.print(plain(f"rbench run: {title} | backends: {', '.join(s.name for s in plan.stacks)} | "
                         f"data: {', '.join(s.name for s in plan.sources) or '-'} | benches: {', '.join(options.benches)}"))
    if any(entry.weights == "random" for entry in plan.models):
        errors.print("[yellow]weights: random (seeded by model name); accuracy is chance level and "
                     "measures the pipeline, not the models[/]")
    for source in plan.sources:
        console.print(plain(f"  {source.name}: {len(source.samples):,} images at {source.root}"
                             + (f" ({source.note})" if source.note else "")))
    reference = plan.stacks[0]
    elsewhere = [s.name for s in plan.stacks[1:] if s.device != reference.device]
    if "validate" in options.benches and elsewhere:  # conformance runs the reference in their cells too
        click.echo(f"rbench: note: the validation cells of {', '.join(elsewhere)} also run the reference "
                   f"stack {reference.name} on its {reference.device} device, image for image "
                   "(conformance-<view>.csv); to keep that pass fast, put a stack of the fastest device first", err=True)
    with GridConsole(console, errors, executor=options.executor, store_dir=options.store_dir) as grid:
        def progress(event) -> None:
            if event["event"] == "grid":
                grid.on_start(event["todo"], event["held"])
            else:
                grid.on_event(event)

        try:
            report = run_plan(plan, registry, force=force, retry_failed=retry_failed, progress=progress)
        except KeyboardInterrupt as exc:
            kept = exc.kept if isinstance(exc, Interrupted) else grid.ran
            errors.print(plain(f"interrupted: {kept} finished cell(s) are kept in "
                               f"{options.store_dir}; run the same command again to resume"))
            raise SystemExit(130) from None
    print_results(console, report.grid_results, sorted(options.out.glob("*.csv")))
    for note in [*report.skipped, *report.notes]:
        errors.print(f"[yellow]{plain(note)}[/]", soft_wrap=True)
    if report.unreadable:
        errors.print(f"[yellow]{len(report.unreadable)} unreadable image(s) were left out of the metrics:[/]")
        for path in report.unreadable:
            errors.print(plain(f"  {path}"), soft_wrap=True)
    console.print(grid.closing_line() + f"; {report.new_rows} row(s) from this run, {report.rows} in "
                  + plain(f"{options.out} (every run's on the store)"))
    if html is not None:
        _write_site(console, report.results, options.out, html)
    if report.failures.height:
        errors.print(plain(f"{report.failures.height} cell(s) failed: see {options.out / 'failures.csv'}; "
                            "run again with --retry-failed to retry them"))
        raise SystemExit(1)  # the grid finished, but not every cell: scripts should notice
    if report.skipped_cells:
        errors.print(plain(f"{report.skipped_cells} cell(s) were skipped, their records kept as they were; "
                            "run the same command again to run them"))
        raise SystemExit(1)


@main.command(context_settings=CONTEXT)
@click.option("--store", type=click.Path(path_type=Path), help="Store of result records. [default: OUT/store]")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Folder for the rebuilt CSVs.")
@click.option("--import", "imports", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="A file of timm's published results folder (results-<view>.csv, benchmark-<kind>-<tag>.csv, "
                   "model_metadata[-in1k].csv), or a folder of them, merged as extra rows.")
@click.option("--data-option", "data_option", multiple=True, metavar="NAME.KEY=VALUE",
              help="A data set's report option, applied to the stored predictions, e.g. "
                   "imagenet-c.reference_model=resnet18.tv_in1k: normalise mCE by that model of the store.")
@metrics_option
@html_option
def report(store, out, imports, data_option, metric_names, html) -> None:
    """Rebuild every CSV from a store's records and predictions (no model runs), optionally
    ranked among imported published results; with --html, an offline site of them."""
    from ..parent.api import NothingToReport, load_report
    from ..parent.plan import check_out_dir
    from ..report.site import check_site_dir

    check_out_dir(out)
    if html is not None:
        check_site_dir(html, out)
    try:
        report = load_report(store if store is not None else out, import_=imports, metrics=metric_names, out=out,
                             data_options=_data_options(data_option))
    except NothingToReport as exc:
        for problem in exc.skipped:  # why the records are not there
            click.echo(f"rbench: warning: {problem}", err=True)
        raise
    for problem in report.skipped:
        click.echo(f"rbench: warning: {problem}", err=True)
    for note in report.notes:
        click.echo(f"rbench: note: {note}", err=True)
    console = open_console()
    console.print("[bold]wrote[/] " + plain(", ".join(str(out / f"{name}.csv") for name in report.tables)))
    if html is not None:
        _write_site(console, report.results, out, html)


def _write_site(console, results, out: Path, html: Path) -> None:
    """The HTML site and static plots of the CSV files in `out` (`--html`)."""
    from ..registry import get_registry
    from ..report.results import imported_rows
    from ..parent.run import view_part_columns
    from ..report.site import write_site

    with console.status("writing the HTML site and its plots"):
        index, notes = write_site(out, html, imported=imported_rows(results), bases=results.bases,
                                  part_columns=view_part_columns(get_registry()))
    for note in notes:
        click.echo(f"rbench: note: {note}", err=True)
    console.print("[bold]wrote[/] " + plain(f"{index} and its plots in {html / 'plots'}"))


@main.command(context_settings=CONTEXT)
@click.argument("a")
@click.argument("b")
@click.option("--view", metavar="VIEW", help="The view to compare on (a results-<view>.csv name). [default: every view both models have]")
@click.option("--img-size", type=Number(NumberRange(int, 1, 8192)), help="The rows at this image size, when a model has several.")
@click.option("--store", type=click.Path(path_type=Path), help="Store of result records. [default: OUT/store]")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="The --out of the run, when --store is not given.")
def compare(a, b, view, img_size, store, out) -> None:
    """A paired test of models A and B on the same images, from their stored predictions.

    Per view: both models' top-1, the difference (A minus B) with its paired 95% interval (Wald,
    on the per-image differences), McNemar's exact p-value, and a one-line verdict. A and B are
    timm tags as in the results files, or architectures when the store holds one tag of each.
    """
    from ..parent.api import compare_store
    from ..store import Store

    the_store = Store(store or out / "store")
    found = compare_store(the_store, a, b, view=view, img_size=img_size)
    for problem in the_store.problems:
        click.echo(f"rbench: warning: {problem}", err=True)
    console = open_console()
    shown = table(f"{found[0].a} (A) vs {found[0].b} (B)",
                   ("view", "images", "top1 A", "top1 B", "A-B", "95% CI", "only A", "only B", "McNemar p"),
                   right=("images", "top1 A", "top1 B", "A-B", "95% CI", "only A", "only B", "McNemar p"))
    for item in found:
        c = item.comparison
        shown.add_row(plain(item.view), f"{c.n:,}", f"{c.top1_a:.3f}", f"{c.top1_b:.3f}", f"{c.diff:+.3f}",
                      f"{c.low:+.3f} to {c.high:+.3f}", f"{c.only_a:,}", f"{c.only_b:,}", c.p_text().lstrip("= "))
    console.print(shown)
    for item in found:
        console.print(plain(f"{item.view}: {item.verdict()}"), soft_wrap=True)


@main.command("check-backend", context_settings=CONTEXT)
@click.argument("stack")
@click.option("--out", type=click.Path(path_type=Path),
              help="Keep the CSVs and the store in this folder. [default: a temporary folder, removed]")
@click.option("--workers", type=run_number("workers"), default=0, show_default=True,
              help="Data loader worker processes (0: this process).")
def check_backend(stack, out, workers) -> None:
    """Does STACK give the answers of `cpu`? A verdict in about a minute.

    Validates timm's tiny test_vit and test_efficientnet (random, seeded weights) on the
    synthetic data on `cpu` and on STACK, and prints their conformance: top-1 and its delta,
    top-1 agreement on the same images, the largest and mean absolute logit difference, and the
    decisive images. PASS when every model keeps MLPerf's 99% of the reference top-1 and the
    reference's top-1 on every decisive image: one whose reference top-1 logit leads the
    runner-up by more than twice STACK's precision's tolerance (bf16: 2^-5, else 2^-8, of the
    largest top-1 logit), which rounding within that tolerance cannot overturn. Exit status 0 on
    PASS, 1 on FAIL, 2 when STACK is unknown or unavailable here.
    """
    import tempfile

    from ..worker.backends import resolve_stack
    from ..report.conformance import CHECK_MODELS, describe, tolerance, verdict
    from ..worker.models import row_name
    from ..registry import get_registry
    from ..parent.run import check_backend as check

    # unknown or unavailable: one line, exit 2, before anything runs
    registry = get_registry()
    allowed = tolerance(resolve_stack(stack, registry).precision)
    reference, dataset = registry.reference_backend(), registry.default_dataset()
    console = open_console()
    errors = open_console(stderr=True)
    console.print(plain(f"rbench check-backend: {stack} against {reference} | models: {', '.join(CHECK_MODELS)} "
                        f"(random weights) | data: {dataset}"))

    with tempfile.TemporaryDirectory(prefix="rbench-check-") as scratch:
        folder = out or Path(scratch)
        if out is not None:
            from ..parent.plan import check_out_dir

            check_out_dir(out)
        with GridConsole(console, errors) as grid:
            view, rows, _ = check(stack, folder, registry, workers=workers, on_event=grid.on_event,
                                  on_start=grid.on_start)
    console.print(conformance_table(f"{stack} against {reference} on {view}", rows))
    for row in rows:
        console.print(plain(f"  {describe(row, allowed)}"), soft_wrap=True)
    passed, line = verdict(rows, [row_name(m, "random") for m in CHECK_MODELS], allowed)
    console.print(plain(f"{stack}: {line}"), soft_wrap=True)
    if out is not None:
        console.print(plain(f"wrote {out / f'conformance-{view}.csv'}"))
    if not passed:
        raise SystemExit(1)


@main.command(context_settings=CONTEXT)
@click.option("--store", type=click.Path(path_type=Path), help="Store of result records. [default: OUT/store]")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="The --out of the run, when --store is not given.")
def status(store, out) -> None:
    """What is done, pending and failed in a store, for each grid run on it."""
    from ..store import Store

    store = Store(store or out / "store")
    if not store.root.is_dir():
        raise RbenchError(f"store {store.root} does not exist; pass the --store (or --out) of an earlier `rbench run`")
    records = {r.key: r for r in store.records()}
    console = open_console()
    grids = store.grids()
    for problem in store.problems:
        click.echo(f"rbench: warning: {problem}", err=True)
    shown = table("grids", ("created", "command", "cells", "done", "failed", "pending"), right=("cells", "done", "failed", "pending"))
    for grid in grids:
        keys = [c["key"] for c in grid["cells"]]
        failed = sum(1 for k in keys if k in records and not records[k].ok)
        done = sum(1 for k in keys if k in records) - failed
        shown.add_row(plain(grid.get("created", "-")), plain(grid.get("command", "-")), str(len(keys)), str(done), str(failed),
                      str(len(keys) - done - failed))
    console.print(shown)
    failed_records = [r for r in records.values() if not r.ok]
    console.print(f"{len(records)} record(s): {len(records) - len(failed_records)} done, {len(failed_records)} failed")
    for record in failed_records:
        cell = record.cell
        where = " on ".join(filter(None, [cell.source, cell.backend]))
        console.print(f"  [red]{plain(record.status)}[/] "
                      + plain(f"{cell.kind} {cell.model} {where}: {record.message}"))


@main.command(context_settings=CONTEXT)
@click.option("-m", "--models", multiple=True, metavar="NAMES",
              help="timm names, globs ('convnext*'), 'all', or @FILE; comma-separated or repeated. [default: all]")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Folder for model_metadata.csv and model_metadata-in1k.csv.")
@click.option("--workers", type=run_number("workers"),
              help="Processes that count on the meta device; 0 counts in this process. [default: CPU count]")
@click.option("--counts/--no-counts", default=True, show_default=True,
              help="Count parameters, GMACs and activations on the meta device (--no-counts: seconds for the whole zoo).")
def metadata(models, out, workers, counts) -> None:
    """Pretraining data, technique, training recipe, configs, parameters and GMACs of timm's pretrained tags.

    Writes model_metadata.csv (one row per tag) and model_metadata-in1k.csv (model,pretrain for
    the tags with a 1000-class ImageNet head), and prints how many 1000-class tags have a known
    training recipe and each of its facts (rules and sources: rbench/worker/recipes.csv).
    Offline: timm's configs, the rules, and the meta device only.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..parent.api import split_names
    from ..worker.metadata import in1k_rows, metadata_rows
    from ..worker.models import resolve_models
    from ..report.results import metadata_table, model_metadata_table, write_csv
    from ..parent.plan import check_out_dir

    console = open_console()
    check_out_dir(out)
    names = resolve_models(split_names(models) or ["all"])
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        rows = metadata_rows(names, workers=workers, progress=progress, counts=counts)
    written = [write_csv(model_metadata_table(rows), out / "model_metadata.csv"),
               write_csv(metadata_table(in1k_rows(rows)), out / "model_metadata-in1k.csv")]
    shown = table("pretraining technique", ("technique", "tags", "1000-class"), right=("tags", "1000-class"))
    techniques = sorted({row["technique"] for row in rows})
    for technique in techniques:
        mine = [row for row in rows if row["technique"] == technique]
        shown.add_row(plain(technique), str(len(mine)), str(len(in1k_rows(mine))))
    console.print(shown)
    print_recipe_coverage(console, in1k_rows(rows))
    print_metadata_notes(console, rows)
    console.print("[bold]wrote[/] " + plain(", ".join(str(p) for p in written)))


@main.group(context_settings=CONTEXT)
def cache() -> None:
    """The decoded-input cache and data set builds: list them, or clear them."""


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _print_foreign(console, paths, where) -> None:
    """The things in a cache folder that rbench did not make: named, never touched."""
    paths = list(paths)
    for path in paths[:10]:
        console.print(plain(f"not rbench's, left alone: {path}"))
    if len(paths) > 10:
        console.print(plain(f"not rbench's, left alone: {len(paths) - 10} more in {where}"))


@cache.command("ls", context_settings=CONTEXT, short_help="List the entries and builds, and their size.")
@cache_dir_option
def cache_ls(cache_dir) -> None:
    """Each entry of the decoded-input cache (named <data set>-<size>-<interpolation>-crop<crop_pct>-
    <crop mode>-<key>), its images, its size on disk and when a model last read it; then each
    data set build in the rbench cache folder (ImageNet-C's JPEGs, ImageNet-P's frames). What
    rbench did not make is named as not rbench's."""
    import time

    from ..worker.input_cache import InputCache, format_size
    from ..made import builds, contents
    from ..paths import cache_dir as rbench_cache

    store = InputCache(cache_dir)
    entries = store.entries()
    console = open_console()
    if not entries:
        console.print(f"the decoded-input cache at {plain(store.root)} is empty")
    else:
        shown = table(f"decoded-input cache: {plain(store.root)}", ("entry", "images", "on disk", "last used"),
                       right=("images", "on disk"))
        for e in entries:
            shown.add_row(plain(e.name if e.meta else f"{e.name} (incomplete)"),
                          f"{e.meta['images']:,}" if e.meta else "-",
                          format_size(e.bytes), time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)))
        console.print(shown)
        console.print(f"{_plural(len(entries), 'entry', 'entries')}, {format_size(sum(e.bytes for e in entries))}")
    _print_foreign(console, store.foreign(), store.root)
    found = builds(rbench_cache())
    if found:
        shown = table(f"data set builds: {plain(rbench_cache())}", ("build", "data set", "files", "on disk"),
                       right=("files", "on disk"))
        total, foreign = 0, []
        for b in found:
            held = contents(b.path, b.patterns)
            total += held.bytes
            foreign.extend(held.foreign)
            shown.add_row(plain(b.path.relative_to(rbench_cache())), plain(b.dataset), f"{held.files:,}",
                          format_size(held.bytes))
        console.print(shown)
        console.print(f"{_plural(len(found), 'build', 'builds')}, {format_size(total)}")
        _print_foreign(console, foreign, rbench_cache())


def _interactive() -> bool:
    """Whether a person can answer a question here: stdin and stdout are terminals."""
    import sys

    return sys.stdin.isatty() and sys.stdout.isatty()


@cache.command("clear", context_settings=CONTEXT, short_help="Remove entries and builds: those named, or all.")
@cache_dir_option
@click.option("--all", "everything", is_flag=True, help="Remove every entry and build, without asking.")
@click.argument("names", nargs=-1)
def cache_clear(cache_dir, everything, names) -> None:
    """Remove entries and data set builds: those named (an entry or a build, or a data set: all
    of its entries and builds), or all.

    With no names it asks before removing every entry and build, or needs --all (without a
    terminal it does not ask: it is an error without --all). An incomplete entry (a build that
    was stopped) is removed with all; a build still running is left alone unless named. Only
    what rbench made is removed (see `rbench cache ls`); anything else is named and left alone.
    """
    from ..worker.input_cache import InputCache, format_size
    from ..made import builds, contents, remove_made
    from ..paths import cache_dir as rbench_cache

    store = InputCache(cache_dir)
    if names and everything:
        raise RbenchError("rbench cache clear: pass entry or data set names, or --all, not both")
    entries, found = store.entries(), builds(rbench_cache())
    if names:
        doomed = [e for e in entries if {e.name, (e.meta or {}).get("source")} & set(names)]
        doomed_builds = [b for b in found if {b.name, b.dataset} & set(names)]
        known = {e.name for e in entries} | {(e.meta or {}).get("source") for e in entries}
        missing = [n for n in names if n not in known | {b.name for b in found} | {b.dataset for b in found}]
        if missing:
            raise RbenchError(f"no cache entry, build or data set {missing[0]!r} in {store.root} or "
                              f"{rbench_cache()}; see `rbench cache ls`")
    else:
        doomed = [e for e in entries if e.meta is not None or not store.is_running_build(e.path)]
        doomed_builds = found
        parts = []
        if doomed:
            parts.append(f"{_plural(len(doomed), 'entry', 'entries')} "
                         f"({format_size(sum(e.bytes for e in doomed))}) of the decoded-input cache at {store.root}")
        if found:
            parts.append(f"{_plural(len(found), 'data set build', 'data set builds')} in {rbench_cache()}")
        what = "all " + " and ".join(parts)
        if parts and not everything:
            if not _interactive():
                raise RbenchError(f"rbench cache clear with no names would remove {what}; pass --all to do so, "
                                  "or name the entries, builds or data sets to remove (see `rbench cache ls`)")
            if not click.confirm(f"remove {what}?", default=False):  # click prints it: no markup
                open_console().print("nothing removed")
                return
    for e in doomed:
        store.remove(e.path)
    console = open_console()
    console.print(f"removed {_plural(len(doomed), 'entry', 'entries')}, "
                  f"{format_size(sum(e.bytes for e in doomed))} freed from {plain(store.root)}")
    _print_foreign(console, store.foreign(), store.root)
    if doomed_builds:
        freed, left = 0, []
        for b in doomed_builds:
            freed += contents(b.path, b.patterns).bytes
            left.extend(remove_made(b.path, b.patterns))
        console.print(f"removed {_plural(len(doomed_builds), 'data set build', 'data set builds')}, "
                      f"{format_size(freed)} freed from {plain(rbench_cache())}")
        _print_foreign(console, left, rbench_cache())


@main.command("list", context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(["datasets", "metrics", "backends", "executors", "models"]))
@click.argument("pattern", required=False)
def list_(kind: str, pattern: str | None) -> None:
    """List data sets, metrics, backends, or timm models matching PATTERN ('convnext*')."""
    if kind == "models":
        import timm

        names = timm.list_models(pattern or "*", pretrained=True) or timm.list_models(pattern or "*")
        click.echo("\n".join(names))
        return
    from fnmatch import fnmatchcase

    from ..registry import get_registry

    registry = get_registry()
    provider = {entry: info.name for info in registry.plugins.values() for entry in info.provides}
    specs = [s for n, s in sorted(getattr(registry, kind).items()) if fnmatchcase(n, pattern or "*")]
    if kind == "datasets":
        shown = table(kind, ("name", "default folder", "description", "plugin"))
        for s in specs:
            shown.add_row(*map(plain, (s.name, s.default_folder or "-", s.description, provider[f"datasets:{s.name}"])))
        added = [s for n, s in sorted(registry.added_views.items())
                 if fnmatchcase(n, pattern or "*") or any(fnmatchcase(v, pattern or "*") for v in s.views)]
        if added:  # views a plugin adds to a source's stored predictions: no data set of their own
            open_console().print(shown)
            shown = table("views added to stored sources", ("name", "source", "views", "description", "plugin"))
            for s in added:
                views = ", ".join(f"{v} (base {b})" if b else v for v, b in s.views.items())
                shown.add_row(*map(plain, (s.name, s.source, views, s.description, provider[f"added_views:{s.name}"])))
    elif kind == "executors":
        shown = table(kind, ("name", "description", "options", "plugin"))
        for s in specs:
            options = "; ".join(f"{o.name}: {o.help}" + (f" ({o.flag})" if o.flag else "") for o in s.options)
            shown.add_row(*map(plain, (s.name, s.description, options or "-", provider[f"executors:{s.name}"])))
    elif kind == "metrics":
        shown = table(kind, ("name", "columns", "description", "plugin"))
        for s in specs:
            shown.add_row(*map(plain, (s.name, ",".join(s.columns), s.description, provider[f"metrics:{s.name}"])))
    else:
        shown = table(kind, ("name", "kind", "available", "description", "plugin"))
        for s in specs:
            reason = s.unavailable()
            shown.add_row(*map(plain, (s.name, "modifier" if s.modifier else "base",
                                        "yes" if not reason else f"no: {reason}",
                                        s.description + (f"; options: {', '.join(s.options)}" if s.options else ""),
                                        provider[f"backends:{s.name}"])))
    open_console().print(shown)


@main.command(context_settings=CONTEXT)
def plugins() -> None:
    """Each loaded plugin, its distribution, and what it provides."""
    from ..registry import get_registry

    shown = table("plugins", ("plugin", "distribution", "provides"))
    for info in get_registry().plugins.values():
        shown.add_row(*map(plain, (info.name, info.distribution, ", ".join(info.provides) or "-")))
    open_console().print(shown)
