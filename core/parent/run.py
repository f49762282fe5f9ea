"""One `rbench run`: the plan's grid through the engine, every record scored into the reports.

The reports are rewritten as each cell finishes, so a run stopped halfway still leaves valid
files of what it finished, and the same command run again only runs the cells that are missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..worker.backends import BackendStack
from ..record import versions
from .engine import run_grid
from ..files import write_json
from ..host import cpu_name
from .plan import Plan
from ..registry import Registry
from ..report.results import Results, write_reports
from ..report.scoring import Scorer
from ..store import Store


def view_bases(registry: Registry) -> dict[str, str | None]:
    """Each view that a loaded data set plugin can produce, and its base view."""
    return {view: base for spec in registry.datasets.values() for view, base in spec.view_bases().items()}


def view_part_columns(registry: Registry) -> dict[str, Sequence[str]]:
    """Each view's per-part top-1 columns, as its data set plugin declares them (`DatasetSpec.part_columns`)."""
    return {view: columns for spec in registry.datasets.values() for view, columns in spec.part_columns.items()}


def run(plan: Plan, registry: Registry, *, force: bool = False, retry_failed: bool = False,
        on_event: Callable[[dict[str, Any]], None] = lambda event: None,
        on_start: Callable[[list, int], None] = lambda todo, done: None) -> Results:
    """Run the plan's missing cells; rewrite the reports in `--out` as each record arrives."""
    options = plan.options
    results = Results(bases=view_bases(registry), scorer=Scorer(Store(options.store_dir), plan.metrics, registry))
    started = time.time()
    write_json(options.out / "run.json", run_info(started, None, plan))

    def on_record(record: dict[str, Any]) -> None:
        results.add_record(record)
        write_reports(results, options.out)

    run_grid(plan, registry, force=force, retry_failed=retry_failed, on_event=on_event, on_start=on_start,
             on_record=on_record)
    write_reports(results, options.out)
    write_json(options.out / "run.json", run_info(started, time.time(), plan))
    return results


def run_info(started: float, finished: float | None, plan: Plan) -> dict[str, Any]:
    """Provenance written beside the CSVs (`run.json`)."""
    import platform
    import socket
    import sys
    import time

    import torch

    info = {
        "command": sys.argv, **versions(), "python": platform.python_version(),
        "cuda": torch.version.cuda, "host": socket.gethostname(), "cpu": cpu_name(),
        "devices": {s.name: _device_tag(s) for s in plan.stacks},
        "executor": plan.options.executor,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)) if finished else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda_driver"] = getattr(torch._C, "_cuda_getDriverVersion", lambda: None)()
    return info


def _device_tag(stack: BackendStack) -> str:
    try:
        return stack.base.device_tag()
    except Exception:  # noqa: BLE001 - provenance never stops a run
        return "unknown"


def check_backend(stack: str, out: Path, registry: Registry, *, workers: int = 0,
                  on_event: Callable[[dict[str, Any]], None] = lambda event: None,
                  on_start: Callable[[list, int], None] = lambda todo, done: None):
    """`(view, its conformance rows, results)` of `stack` against the reference backend
    (`Registry.reference_backend`) on the built-in set: `CHECK_MODELS` with random seeded weights,
    validated into `out` on the default data set's first view (`Registry.default_dataset`)."""
    from ..report.conformance import CHECK_MODELS
    from .plan import RunOptions, make_plan

    options = RunOptions(models=list(CHECK_MODELS), datasets=[registry.default_dataset()],
                         backends=[registry.reference_backend(), stack], benches=["validate"], weights="random",
                         out=out, batch_size=32, workers=workers, input_cache=False)
    plan = make_plan(options, registry)
    results = run(plan, registry, force=True, on_event=on_event, on_start=on_start)
    view = plan.sources[0].views[0].name
    return view, results.conformance.get(view, []), results
