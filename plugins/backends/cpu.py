"""CPU backends: fp32, and bf16 autocast, on the host processor.

Telemetry is what Linux offers without extra packages: the cores' current frequency (cpufreq),
the package temperature (thermal zone `x86_pkg_temp`), and the package energy counters of
RAPL (powercap), which are often readable by root only. Where none can be read the columns
stay empty.
"""

from __future__ import annotations

from pathlib import Path

import rbench


def _to_cpu(x):
    return x.to("cpu")


def _bf16_autocast():
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def _is_out_of_memory(exc: BaseException) -> bool:
    # The CPU allocator says "can't allocate memory" where CUDA says "out of memory".
    return rbench.default_is_out_of_memory(exc) or "can't allocate memory" in str(exc)


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
    """A `Telemetry` of the host CPU from Linux's sysfs under `root`; what cannot be read is left out."""

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

    def read(self) -> rbench.TelemetryReading:
        reading: rbench.TelemetryReading = {}
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
    """The host CPU's telemetry, or None where Linux offers none of it (another OS, a container)."""
    telemetry = SysfsCpuTelemetry(root)
    return telemetry if telemetry.read() else None


def _cpu_backend(name: str, description: str, precision: str, priority: int, **kwargs) -> rbench.BackendSpec:
    return rbench.BackendSpec(
        name=name,
        description=description,
        device="cpu",
        precision=precision,
        priority=priority,
        device_tag=rbench.cpu_tag,
        prepare_model=_to_cpu,
        prepare_input=_to_cpu,
        is_out_of_memory=_is_out_of_memory,
        telemetry=cpu_telemetry,
        **kwargs,
    )


@rbench.hookimpl
def rbench_backends():
    return [
        _cpu_backend("cpu", "CPU, fp32", "fp32", 0),
        # Below plain cpu: bf16 autocast is only fast on CPUs with bf16 instructions (AMX, AVX512-BF16).
        _cpu_backend("cpu-amp-bf16", "CPU, bf16 autocast", "amp_bf16", -10, autocast=_bf16_autocast),
    ]
