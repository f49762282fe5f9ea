"""The Ray executor: cells spread over a Ray cluster's workers (`pip install rbench[ray]`).

Each cell is one Ray task, given what its backend stack declares (`BackendSpec.ray_resources`:
one GPU for the `cuda` bases, a custom resource for another accelerator; one CPU unless it
says otherwise). Each task returns its cells' outcomes with their records, which the driver
stores; workers write the predictions files into the store, so the store must be on a path
every worker can reach.
"""

from __future__ import annotations

import os

import rbench


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise rbench.RbenchError("the ray executor needs Ray: pip install 'rbench[ray]'") from exc
    return ray


RAY_OPTIONS = ("num_cpus", "num_gpus", "memory")  # Ray's own; any other key is a custom resource


def task_options(resources: dict[str, float]) -> dict:
    """The options of one cell's Ray task from its stack's `ray_resources`."""
    options: dict = {"num_cpus": 1, "num_gpus": 0}
    options.update({k: v for k, v in resources.items() if k in RAY_OPTIONS})
    custom = {k: v for k, v in resources.items() if k not in RAY_OPTIONS}
    if custom:
        options["resources"] = custom
    return options


def execute(grid: rbench.Grid):
    ray = _ray()
    if not ray.is_initialized():
        address = grid.options.get("address") or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)

    @ray.remote
    def run_one(job):
        import rbench as worker_rbench

        return [outcome.to_json() for outcome in worker_rbench.run_cells(worker_rbench.Job.from_json(job))]

    tasks = {}
    for cell in grid.cells:
        options = task_options(cell.ray_resources)
        task = run_one.options(**options, max_retries=0).remote(grid.job([cell]).to_json())
        tasks[task] = cell
        grid.on_event({"event": "start", "key": cell.key})
    while tasks:
        done, _ = ray.wait(list(tasks), num_returns=1, timeout=grid.cell_timeout)
        if not done:  # nothing finished within the timeout: fail the oldest cell still running
            task = next(iter(tasks))
            ray.cancel(task, force=True)
            yield rbench.record_failure(grid, tasks.pop(task), "timeout", f"ran past --cell-timeout {grid.cell_timeout:g} s")
            continue
        task = done[0]
        cell = tasks.pop(task)
        try:
            (result,) = ray.get(task)
        except Exception as exc:  # the task itself died (worker crash, lost node)
            yield rbench.record_failure(grid, cell, "crashed", f"Ray task failed: {rbench.one_line(exc)}")
            continue
        yield rbench.CellOutcome.from_json(result)


@rbench.hookimpl
def rbench_executors():
    return [rbench.ExecutorSpec(
        name="ray", description="cells spread over a Ray cluster",
        execute=execute,
        options=[rbench.ExecutorOption(name="address", flag="--ray-address",
                                       help="HOST:PORT of the Ray cluster [default: $RAY_ADDRESS, else a local Ray "
                                            "instance]")],
    )]
