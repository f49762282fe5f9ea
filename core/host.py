"""Facts about the machine rbench runs on, for provenance and file names."""

from __future__ import annotations

import platform
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .specs import TelemetryReading


@cache
def cpu_name() -> str:
    """The CPU's model name (`AMD EPYC 9654 96-Core Processor`), or the best the platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Words that name the vendor or product line, not the chip: "Intel(R) Core(TM) i7-12700H" -> i7_12700h.
_NOISE = {"intel", "amd", "core", "cpu", "processor", "with", "radeon", "graphics", "apple"}


def short_cpu_name(model_name: str) -> str:
    """A short lowercase CPU name for file names, as timm's tables use (`i7_12700h`, `epyc_9654`)."""
    text = re.sub(r"\(.*?\)|@.*$|\d+-core", " ", model_name.lower())
    words = [w for w in re.split(r"[\s_]+", text) if w and w not in _NOISE]
    return re.sub(r"[^a-z0-9]+", "_", "_".join(words)).strip("_") or "unknown"


def cpu_tag() -> str:
    """This CPU in benchmark file names: `cpu-<short cpu name>` (`cpu-epyc_9654`)."""
    return f"cpu-{short_cpu_name(cpu_name())}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:  # gone (a CPU taken offline) or not readable by this user
        return ""


def _read_number(path: Path) -> float | None:
    try:
        return float(_read_text(path))
    except ValueError:
        return None


class SysfsCpuTelemetry:
    """A `Telemetry` of the host CPU from Linux's sysfs under `root`, without extra packages: the
    cores' current frequency (cpufreq), the package temperature (thermal zone `x86_pkg_temp`) and
    the package energy counters of RAPL (powercap), often readable by root only. What cannot be
    read is left out."""

    def __init__(self, root: Path = Path("/sys")) -> None:
        self._frequencies = sorted(root.glob("devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
        # Packages only (intel-rapl:0), not their sub-domains (intel-rapl:0:0), which they include.
        self._packages = sorted(p for p in root.glob("class/powercap/intel-rapl:*") if p.name.count(":") == 1)
        self._temperatures = [zone / "temp" for zone in sorted(root.glob("class/thermal/thermal_zone*"))
                              if _read_text(zone / "type") == "x86_pkg_temp"]
        self._last_uj: dict[Path, float] = {}
        self._wrapped_uj: dict[Path, float] = {}

    def _energy_j(self) -> float | None:
        total, found = 0.0, False
        for package in self._packages:
            now = _read_number(package / "energy_uj")
            if now is None:
                continue
            last = self._last_uj.get(package)
            if last is not None and now < last:  # the counter wrapped around its range
                self._wrapped_uj[package] = self._wrapped_uj.get(package, 0.0) + (
                    _read_number(package / "max_energy_range_uj") or 0.0)
            self._last_uj[package] = now
            total, found = total + now + self._wrapped_uj.get(package, 0.0), True
        return total / 1e6 if found else None

    def read(self) -> TelemetryReading:
        reading: TelemetryReading = {}
        khz = [v for v in map(_read_number, self._frequencies) if v is not None]
        if khz:
            reading["clock_mhz"] = sum(khz) / len(khz) / 1000.0
        temperatures = [v for v in map(_read_number, self._temperatures) if v is not None]
        if temperatures:
            reading["temperature_c"] = max(temperatures) / 1000.0
        energy = self._energy_j()
        if energy is not None:
            reading["energy_j"] = energy
        return reading


def cpu_telemetry(root: Path = Path("/sys")) -> SysfsCpuTelemetry | None:
    """The host CPU's telemetry, or None where Linux offers none of it (another OS, a container):
    the `BackendSpec.telemetry` of any backend that computes on the host CPU."""
    telemetry = SysfsCpuTelemetry(root)
    return telemetry if telemetry.read() else None
