"""rbench: accuracy, robustness and throughput benchmarks for timm image classifiers.

The public API that plugins import. `import rbench` stays light: torch and timm are imported
inside the functions that need them.
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
from .record import CellRecord
from .folders import IMAGE_EXTENSIONS, list_class_folders, natural_key
from .hookspecs import hookimpl
from .made import mark_build
from .host import cpu_name, cpu_tag, cpu_telemetry
from .paths import cache_dir, timm_info_file
from .runtime import ExportedModel, exporter_reason
from .specs import (
    BackendSpec,
    CellDone,
    CellNote,
    CellProgressed,
    CellStarted,
    DataRequest,
    DatasetSpec,
    Event,
    ExecutorOption,
    ExecutorSpec,
    Label,
    MetricSpec,
    Predictions,
    Source,
    StepTimer,
    Telemetry,
    TelemetryReading,
    ViewSpec,
    default_is_out_of_memory,
)
from . import statistics


__all__ = [
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
    "Source",
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
    "cpu_name",
    "cpu_tag",
    "cpu_telemetry",
    "default_is_out_of_memory",
    "exporter_reason",
    "first_few",
    "hookimpl",
    "list_class_folders",
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
    "write_bytes",
]
