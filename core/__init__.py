"""rbench: accuracy, robustness and throughput benchmarks for timm image classifiers.

The public API: what plugins import, and rbench as a library (`evaluate`, `load_report`,
`compare`, `Report`; see docs/api.md). `import rbench` stays light: torch, timm and polars are
imported inside the functions that need them, and the library's names on first use.
"""

from .version import __version__
from .builds import BuildProgress, check_option_names, option_choices, option_whole_number, run_build
from .files import write_bytes
from .errors import (
    DataError,
    ExportError,
    PluginError,
    RbenchError,
    UnavailableError,
    UnknownNameError,
    WeightsError,
    first_few,
    one_line,
)
from .worker.cells import Job
from .record import Cell
from .parent.engine import Grid
from .worker.jobs import CellOutcome, record_failure, run_cells
from .worker.worker import command as worker_command
from .worker.worker import server_command as worker_server_command
from .record import CellRecord
from .folders import IMAGE_EXTENSIONS, list_class_folders, natural_key
from .hookspecs import hookimpl
from .made import mark_build
from .host import cpu_name, cpu_tag, cpu_telemetry
from .paths import cache_dir, timm_info_file
from .runtime import ExportedModel, exporter_reason
from .specs import (
    AddedViews,
    BackendSpec,
    CellDone,
    CellNote,
    CellProgressed,
    CellStarted,
    DataRequest,
    DatasetSpec,
    Event,
    ExecutorOption,
    GridStarted,
    Progress,
    ExecutorSpec,
    Label,
    MetricSpec,
    Predictions,
    ReportRequest,
    Source,
    SourceBuild,
    StepTimer,
    Telemetry,
    TelemetryReading,
    ViewSpec,
    default_is_out_of_memory,
)
from . import statistics


__all__ = [
    "AddedViews",
    "BackendSpec",
    "BuildProgress",
    "Cell",
    "CellDone",
    "CellNote",
    "CellOutcome",
    "CellRecord",
    "CellProgressed",
    "CellStarted",
    "Event",
    "ExecutorOption",
    "ExecutorSpec",
    "ExportError",
    "ExportedModel",
    "Grid",
    "GridStarted",
    "Progress",
    "Report",
    "DataError",
    "DataRequest",
    "DatasetSpec",
    "IMAGE_EXTENSIONS",
    "Job",
    "Label",
    "MetricSpec",
    "PluginError",
    "Predictions",
    "RbenchError",
    "ReportRequest",
    "Source",
    "SourceBuild",
    "StepTimer",
    "Telemetry",
    "TelemetryReading",
    "UnavailableError",
    "UnknownNameError",
    "ViewSpec",
    "WeightsError",
    "__version__",
    "cache_dir",
    "check_option_names",
    "compare",
    "cpu_name",
    "cpu_tag",
    "cpu_telemetry",
    "default_is_out_of_memory",
    "evaluate",
    "exporter_reason",
    "first_few",
    "hookimpl",
    "list_class_folders",
    "load_report",
    "mark_build",
    "natural_key",
    "one_line",
    "option_choices",
    "option_whole_number",
    "record_failure",
    "statistics",
    "run_build",
    "run_cells",
    "timm_info_file",
    "worker_command",
    "worker_server_command",
    "write_bytes",
]


def __getattr__(name: str):
    """The library's names, imported on first use (they bring the plan, the engine and the reports)."""
    if name in ("evaluate", "load_report", "compare"):
        from .parent import api

        return getattr(api, name)
    if name == "Report":
        from .report.tables import Report

        return Report
    raise AttributeError(f"module 'rbench' has no attribute {name!r}")
