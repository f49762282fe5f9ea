"""The local executor: every cell in this process, one after the other."""

from __future__ import annotations

import rbench


def execute(grid: rbench.Grid):
    # The cells run here, so a timeout can only be an alarm signal in this (main) thread.
    yield from rbench.run_cells(grid.job(grid.cells), on_event=grid.on_event, timeout=grid.cell_timeout,
                                registry=grid.registry)


@rbench.hookimpl
def rbench_executors():
    return [rbench.ExecutorSpec(name="local", description="every cell in this process", execute=execute,
                                default_for="validation")]
