"""The Ray executor: cells spread over a Ray cluster's workers (`pip install rbench[ray]`).

Each cell is one Ray task, given what its backend stack declares (`BackendSpec.ray_resources`:
one GPU for the `cuda` bases, a custom resource for another accelerator; one CPU unless it
says otherwise), plus one CPU per data loader process of a validation cell (`--workers`), at
most the CPUs of the cluster's largest node.

The nodes need to share nothing with the driver but the data set folders: a task gets its job
without a store (`Grid.detached_job`: the sources' listings travel with it), each checkpoint it
loads travels as bytes (`ray.put`) and is written to a temporary file on the node, checked
against the hash the plan recorded, and the synthetic data set is made again on the node. Each
task sends its cell's record and predictions file back; the driver alone writes the store. The
decoded-input cache is each node's own (its folder resolved there).

A task tells the driver when its cell starts (and its progress) through a small actor, so a
cell is reported started when it runs, not when it is submitted, and `--cell-timeout` counts
from then: a cell past it is cancelled (its worker process killed) and fails alone, whatever
the others do. A task imports torch and timm before its cell starts, so a fresh worker's
imports are not counted against the cell.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import rbench

POLL_S = 0.2  # how often the driver collects the tasks' events while none ends
clock = time.monotonic  # the driver's clock for `--cell-timeout`; a test drives its own
ENDED = "ended"  # a task's own event, never relayed: its cell's outcome is ready


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise rbench.RbenchError("the ray executor needs Ray: pip install 'rbench[ray]'") from exc
    return ray


RAY_OPTIONS = ("num_cpus", "num_gpus", "memory")  # Ray's own; any other key is a custom resource


def task_options(resources: dict[str, float], loader_workers: int = 0, node_cpus: float | None = None) -> dict:
    """The options of one cell's Ray task from its stack's `ray_resources`, with one more CPU
    for each of its `loader_workers` (data loader processes), at most `node_cpus` (the largest
    node's CPUs, so that the task can be placed) and never fewer than the stack declares."""
    options: dict = {"num_cpus": 1, "num_gpus": 0}
    options.update({k: v for k, v in resources.items() if k in RAY_OPTIONS})
    if loader_workers:
        wanted = options["num_cpus"] + loader_workers
        options["num_cpus"] = max(options["num_cpus"], min(wanted, node_cpus if node_cpus else wanted))
    custom = {k: v for k, v in resources.items() if k not in RAY_OPTIONS}
    if custom:
        options["resources"] = custom
    return options


class CellEvents:
    """The Ray actor that the tasks send their cells' events to, and the driver takes them from."""

    def __init__(self):
        self.events: list[dict] = []

    def put(self, event: dict) -> None:
        self.events.append(event)

    def take(self) -> list[dict]:
        events, self.events = self.events, []
        return events


def run_task(job: dict, cells: list[dict], events, checkpoints: list[str], *contents: bytes) -> list[dict]:
    """One Ray task: the cells of a detached job (`job`, shared by every task, with `cells`),
    with the checkpoints at `checkpoints` on the driver's machine (their bytes: `contents`, which
    Ray fetches before the task starts) written on this node; each event goes to the `events`
    actor. Returns each cell's outcome with its predictions (`CellOutcome.to_json`)."""
    import timm  # noqa: F401 - imported before the cell's clock starts
    import torch  # noqa: F401

    import rbench as worker_rbench

    job = worker_rbench.Job.from_json(job).with_cells(worker_rbench.Cell.from_json(c) for c in cells)
    if checkpoints:
        job = job.with_checkpoint_copies(dict(zip(checkpoints, contents, strict=True)))

    def send(event: dict) -> None:
        call = events.put.remote(event)
        if event["event"] in ("start", ENDED):  # the driver has it before the cell runs, or another starts
            # Not `ray.get`: a task blocked in it lends its CPUs to another task meanwhile.
            call.future().result()

    outcomes = [outcome.to_json() for outcome in worker_rbench.run_cells(job, on_event=send)]
    send({"event": ENDED, "key": job.cells[0].key})
    return outcomes


def _largest_node_cpus(ray) -> float | None:
    cpus = [node.get("Resources", {}).get("CPU", 0) for node in ray.nodes() if node.get("Alive", True)]
    return max(cpus) if cpus else None


def execute(grid: rbench.Grid):
    ray = _ray()
    if not ray.is_initialized():
        address = grid.options.get("address") or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    if not grid.cells:
        return
    events = ray.remote(num_cpus=0)(CellEvents).remote()
    run_one = ray.remote(run_task)
    job = ray.put(grid.detached_job([]).to_json())
    checkpoints = {path: ray.put(Path(path).read_bytes()) for path in grid.checkpoints(grid.cells)}
    node_cpus = _largest_node_cpus(ray)
    tasks = {}
    for cell in grid.cells:
        loaders = grid.base_job.workers if cell.kind == "validate" else 0
        options = task_options(cell.ray_resources, loaders, node_cpus)
        sent = [cell.weights] if cell.weights in checkpoints else []
        task = run_one.options(**options, max_retries=0).remote(job, [cell.to_json()], events, sent,
                                                                *(checkpoints[path] for path in sent))
        tasks[task] = cell
    started: dict[str, float] = {}  # cell key -> when its start event came (`clock()`)
    task_of = {cell.key: task for task, cell in tasks.items()}

    def finish(task):
        """The outcome of a task that has returned (or died), its cell ended here."""
        cell = tasks.pop(task)
        try:
            (result,) = ray.get(task)
            return rbench.CellOutcome.from_json(result)
        except Exception as exc:  # the task itself died (worker crash, lost node)
            return rbench.record_failure(grid, cell, "crashed", f"Ray task failed: {rbench.one_line(exc)}")

    def relay():
        """The events sent so far, in the order they were sent: a cell's end (its task returns
        just after) comes before the start of the cell that then takes its CPUs."""
        for event in ray.get(events.take.remote()):
            task = task_of.get(event["key"])
            if task not in tasks:  # a late event of a cell that has ended
                continue
            if event["event"] == ENDED:
                yield finish(task)
                continue
            if event["event"] == "start":
                started[event["key"]] = clock()
            grid.on_event(event)

    try:
        while tasks:
            yield from relay()
            wait = POLL_S
            if grid.cell_timeout:
                now = clock()
                for task, cell in list(tasks.items()):
                    if cell.key in started and now - started[cell.key] >= grid.cell_timeout:
                        ray.cancel(task, force=True)
                        tasks.pop(task)
                        yield rbench.record_failure(grid, cell, "timeout",
                                                    f"ran past --cell-timeout {grid.cell_timeout:g} s")
                ends = [started[c.key] + grid.cell_timeout - now for c in tasks.values() if c.key in started]
                wait = max(0.0, min([POLL_S, *ends]))
            if not tasks:
                break
            done, _ = ray.wait(list(tasks), num_returns=1, timeout=wait)
            if done:
                yield from relay()  # a task that returned sent its end first
                if done[0] in tasks:  # it died without saying so
                    yield finish(done[0])
    finally:
        for task in tasks:  # Ctrl-C: nothing of this grid keeps running on the cluster
            ray.cancel(task, force=True)
        ray.kill(events)


@rbench.hookimpl
def rbench_executors():
    return [rbench.ExecutorSpec(
        name="ray", description="cells spread over a Ray cluster",
        execute=execute,
        options=[rbench.ExecutorOption(name="address", flag="--ray-address",
                                       help="HOST:PORT of the Ray cluster [default: $RAY_ADDRESS, else a local Ray "
                                            "instance]")],
    )]
