"""The `rbench` command line."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from . import __version__
from .errors import RbenchError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RbenchGroup(click.Group):
    """A click group that prints an `RbenchError` as one line and exits 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RbenchError as exc:
            click.echo(f"rbench: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _table(title: str, columns: tuple[str, ...], right: tuple[str, ...] = ()):
    """A rich table whose names never end in an ellipsis: long ones fold onto the next line."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left",
                         overflow="fold" if col != "description" else "ellipsis")
    return table


def _split(values: tuple[str, ...]) -> list[str]:
    """`-b a,b -b c` -> `[a, b, c]`."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _data_paths(values: tuple[str, ...]) -> dict[str, Path]:
    paths = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise RbenchError(f"--data {value!r}: expected NAME=PATH, for example --data imagenet=/data/val")
        paths[name.strip()] = Path(path).expanduser()
    return paths


@click.group(cls=RbenchGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="rbench")
def main() -> None:
    """Accuracy, robustness and throughput benchmarks for timm image classifiers.

    `rbench run` with no options runs the embedded default suite: timm's tiny test models with
    random weights on a generated data set, on the best backend here.
    """


@main.command(context_settings=CONTEXT)
@click.option("-m", "--models", multiple=True, metavar="NAMES",
              help="timm names, globs ('resnet*'), 'all', or @FILE; comma-separated or repeated. "
                   "Default: the embedded suite (tiny test models, random weights).")
@click.option("-d", "--datasets", multiple=True, metavar="NAMES",
              help="Data set sources to validate on (see `rbench list datasets`). Default: those named by "
                   "--data/--data-dir, else synthetic.")
@click.option("-b", "--backends", multiple=True, metavar="STACKS",
              help="Backend stacks, e.g. cpu, cuda-amp+channels-last (see `rbench list backends`). "
                   "Validation runs on the first; benchmarks on each. Default: the best available.")
@click.option("--bench", "benches", multiple=True, metavar="KINDS",
              help="What to run: validate, infer, metadata (comma-separated). Default: all.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Folder for the result CSVs.")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="RBENCH_DATA_ROOT",
              help="Folder holding the data sets in their default folders [env: RBENCH_DATA_ROOT].")
@click.option("--data", "data", multiple=True, metavar="NAME=PATH", help="Folder of one data set, overriding --data-root.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Folder of class subfolders for the 'imagefolder' data set.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size for validation and benchmarks. [default: 256; 32 for the embedded suite]")
@click.option("--workers", type=click.IntRange(min=0),
              help="Data loader worker processes, and metadata processes (0: this process). [default: CPU count, at most 8]")
@click.option("--img-size", type=click.IntRange(min=16), help="Evaluate at this square size instead of the model's test size.")
@click.option("--weights", default=None, metavar="pretrained|random|PATH",
              help="Model weights: pretrained (timm's, from the hub cache), random (seeded by model name), "
                   "or a .safetensors / torch checkpoint. [default: pretrained; random for the embedded suite]")
@click.option("--trust-checkpoint", is_flag=True, help="Allow a checkpoint that needs full unpickling (can run code).")
@click.option("--allow-partial", is_flag=True, help="Run on data sets with missing classes or images.")
@click.option("--warmup-steps", type=click.IntRange(min=0), help="Benchmark warm-up steps. [default: 10]")
@click.option("--bench-steps", type=click.IntRange(min=1), help="Benchmark: time at least this many steps. [default: 40]")
@click.option("--bench-seconds", type=click.FloatRange(min=0), help="Benchmark: and at least this many seconds. [default: 5]")
def run(models, datasets, backends, benches, out, data_root, data, data_dir, batch_size, workers, img_size,
        weights, trust_checkpoint, allow_partial, warmup_steps, bench_steps, bench_seconds) -> None:
    """Validate and benchmark models; write the CSVs of timm's results folder."""
    from dataclasses import replace

    from .registry import get_registry
    from .run import RunOptions, check_out_dir, default_suite, make_plan

    console = _console()
    options = RunOptions(out=out, data_root=data_root, data_paths=_data_paths(data),
                         trust_checkpoint=trust_checkpoint, allow_partial=allow_partial)
    if data_dir is not None:
        options.data_paths.setdefault("imagefolder", data_dir)
    if datasets:
        options.datasets = _split(datasets)
    elif options.data_paths:  # a folder given for a data set asks for that data set
        options.datasets = list(options.data_paths)
    options.backends = _split(backends)
    if benches:
        options.benches = _split(benches)
    if not models:
        options = default_suite(options)
    else:
        options.models = _split(models)
    bench = options.bench
    options = replace(
        options,
        batch_size=batch_size or options.batch_size,
        workers=options.workers if workers is None else workers,
        img_size=img_size,
        weights=weights or options.weights,
        bench=replace(
            bench,
            batch_size=batch_size or bench.batch_size,
            warmup_steps=bench.warmup_steps if warmup_steps is None else warmup_steps,
            steps=bench_steps or bench.steps,
            seconds=bench.seconds if bench_seconds is None else bench_seconds,
        ),
    )
    check_out_dir(out)
    plan = make_plan(options, get_registry())
    _run_and_report(plan, console, embedded=not models)


def _run_and_report(plan, console, embedded: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .run import run_plan

    options = plan.options
    title = "embedded default suite" if embedded else f"{len(plan.models)} model(s)"
    console.print(f"[bold]rbench run[/]: {title} | backends: {', '.join(s.name for s in plan.stacks)} | "
                  f"data: {', '.join(s.name for s in plan.sources) or '-'} | benches: {', '.join(options.benches)}")
    if options.weights == "random":
        console.print("[yellow]weights: random (seeded by model name); accuracy is chance level and "
                      "measures the pipeline, not the models[/]")
    for source in plan.sources:
        console.print(f"  {source.name}: {len(source.samples):,} images at {source.root}" + (f" ({source.note})" if source.note else ""))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        results, written = run_plan(plan, options.out, progress)
    _print_results(console, results, written)


def _print_results(console, results, written) -> None:
    if results.validation:
        table = _table("validation", ("view", "model", "img_size", "top1", "top5", "images"),
                       right=("img_size", "top1", "top5", "images"))
        for view, rows in results.validation.items():
            for row in sorted(rows, key=lambda r: (-r["top1"], -r["top5"], r["model"])):
                table.add_row(view, row["model"], str(row["img_size"]), f"{row['top1']:.3f}", f"{row['top5']:.3f}", str(row["count"]))
        console.print(table)
    if results.benchmarks:
        columns = ("backend", "model", "img_size", "batch", "samples/s", "step ms", "GMACs", "params (M)")
        table = _table("inference throughput", columns, right=columns[2:])
        for rows in results.benchmarks.values():
            for row in rows:
                macs = row["infer_gmacs"]
                table.add_row(row["backend"], row["model"], str(row["infer_img_size"]), str(row["infer_batch_size"]),
                              f"{row['infer_samples_per_sec']:,.1f}", f"{row['infer_step_time']:.2f}",
                              "-" if macs is None else f"{macs:.2f}", f"{row['param_count']:.2f}")
        console.print(table)
    if results.metadata:
        _print_metadata_notes(console, results.metadata)
    if written:
        console.print("[bold]wrote[/] " + ", ".join(str(p) for p in written))


def _print_metadata_notes(console, rows) -> None:
    """Tags that could not be counted on the meta device, then tags that no name rule knows."""
    from .metadata import unknown_tags

    failed = [row for row in rows if row.get("note")]
    if failed:
        console.print(f"[yellow]{len(failed)} tag(s) not fully counted on the meta device:[/]")
        for row in failed:
            console.print(f"  {row['model']}: {row['note']}")
    unknown = unknown_tags(rows)
    if unknown:
        console.print(f"[yellow]{len(unknown)} tag(s) with unknown pretraining data or technique "
                      "(add rules to rbench/metadata.py):[/] " + ", ".join(unknown))


@main.command(context_settings=CONTEXT)
@click.option("-m", "--models", multiple=True, metavar="NAMES",
              help="timm names, globs ('convnext*'), 'all', or @FILE; comma-separated or repeated. [default: all]")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Folder for model_metadata.csv and model_metadata-in1k.csv.")
@click.option("--workers", type=click.IntRange(min=0),
              help="Processes that count on the meta device; 0 counts in this process. [default: CPU count]")
def metadata(models, out, workers) -> None:
    """Pretraining data, technique, configs, parameters and GMACs of timm's pretrained tags.

    Writes model_metadata.csv (one row per tag) and model_metadata-in1k.csv (model,pretrain for
    the tags with a 1000-class ImageNet head). Offline: timm's configs and the meta device only.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .metadata import in1k_rows, metadata_rows
    from .models import resolve_models
    from .report import metadata_table, model_metadata_table, write_csv
    from .run import check_out_dir

    console = _console()
    check_out_dir(out)
    names = resolve_models(_split(models) or ["all"])
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        rows = metadata_rows(names, workers=workers, progress=progress)
    written = [write_csv(model_metadata_table(rows), out / "model_metadata.csv"),
               write_csv(metadata_table(in1k_rows(rows)), out / "model_metadata-in1k.csv")]
    table = _table("pretraining technique", ("technique", "tags", "1000-class"), right=("tags", "1000-class"))
    techniques = sorted({row["technique"] for row in rows})
    for technique in techniques:
        mine = [row for row in rows if row["technique"] == technique]
        table.add_row(technique, str(len(mine)), str(len(in1k_rows(mine))))
    console.print(table)
    _print_metadata_notes(console, rows)
    console.print("[bold]wrote[/] " + ", ".join(str(p) for p in written))


@main.command("list", context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(["datasets", "metrics", "backends", "models"]))
@click.argument("pattern", required=False)
def list_(kind: str, pattern: str | None) -> None:
    """List data sets, metrics, backends, or timm models matching PATTERN ('convnext*')."""
    if kind == "models":
        import timm

        names = timm.list_models(pattern or "*", pretrained=True) or timm.list_models(pattern or "*")
        click.echo("\n".join(names))
        return
    from fnmatch import fnmatchcase

    from .registry import get_registry

    registry = get_registry()
    provider = {entry: info.name for info in registry.plugins.values() for entry in info.provides}
    specs = [s for n, s in sorted(getattr(registry, kind).items()) if fnmatchcase(n, pattern or "*")]
    if kind == "datasets":
        table = _table(kind, ("name", "default folder", "description", "plugin"))
        for s in specs:
            table.add_row(s.name, s.default_folder or "-", s.description, provider[f"datasets:{s.name}"])
    elif kind == "metrics":
        table = _table(kind, ("name", "columns", "description", "plugin"))
        for s in specs:
            table.add_row(s.name, ",".join(s.columns), s.description, provider[f"metrics:{s.name}"])
    else:
        table = _table(kind, ("name", "kind", "available", "description", "plugin"))
        for s in specs:
            reason = s.unavailable()
            table.add_row(s.name, "modifier" if s.modifier else "base", "yes" if not reason else f"no: {reason}",
                          s.description, provider[f"backends:{s.name}"])
    _console().print(table)


@main.command(context_settings=CONTEXT)
def plugins() -> None:
    """Each loaded plugin, its distribution, and what it provides."""
    from .registry import get_registry

    table = _table("plugins", ("plugin", "distribution", "provides"))
    for info in get_registry().plugins.values():
        table.add_row(info.name, info.distribution, ", ".join(info.provides) or "-")
    _console().print(table)
