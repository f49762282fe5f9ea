"""Device telemetry in the detailed benchmark rows: NVML on NVIDIA GPUs (a fake NVML here), the
CPU's sysfs files (a fake /sys tree here), the summary of the readings, and empty columns where
nothing can be read."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

import rbench
from rbench import BackendSpec, hookimpl
from rbench.worker.benchmark import telemetry_columns
from rbench.host import SysfsCpuTelemetry
from rbench.plugins.backends import cuda as cuda_plugin
from rbench.report.results import TELEMETRY_COLUMNS

from .test_benchmark import run_fake



@pytest.fixture
def pynvml():
    """nvidia-ml-py's module, whose functions the tests replace (CI installs the nvml extra)."""
    return pytest.importorskip("pynvml", reason="NVML telemetry needs the nvml extra: pip install 'rbench[nvml]'")


class TelemetryDevice:
    """A test plugin: a CPU backend whose telemetry is the factory it is given."""

    def __init__(self, telemetry):
        self.telemetry = telemetry

    @hookimpl
    def rbench_backends(self):
        return [BackendSpec(name="fakedev", description="fake", device="cpu", device_tag=lambda: "fake-x1",
                            telemetry=self.telemetry)]


class FakeNvml:
    """NVML's functions as a GPU would answer them, logging every value handed out: the clocks
    step down, the temperature climbs, the energy counter grows 5 J a reading, and the throttle
    reasons are idle (left out) at first, then power cap and hardware thermal slowdown."""

    def __init__(self, pynvml, monkeypatch, energy: bool = True, reasons=(0x1, 0x4 | 0x40 | 0x1)):
        self.nvml = pynvml
        self.given: dict[str, list[float]] = {"sm": [], "mem": [], "power": [], "temp": [], "energy": []}
        self.reads, self.reasons, self.energy = 0, reasons, energy
        for name, value in {
            "nvmlInit": lambda: None,
            "nvmlDeviceGetClockInfo": self.clock,
            "nvmlDeviceGetPowerUsage": lambda h: self.give("power", 300_000 + 1000 * self.reads),  # mW
            "nvmlDeviceGetTemperature": lambda h, sensor: self.give("temp", 60 + self.reads),
            "nvmlDeviceGetTotalEnergyConsumption": self.total_energy,
            "nvmlDeviceGetCurrentClocksEventReasons": self.throttle,
        }.items():
            monkeypatch.setattr(pynvml, name, value)
        monkeypatch.setattr(cuda_plugin, "_nvml_handle", lambda nvml: "gpu0")

    def give(self, what: str, value: float) -> float:
        self.given[what].append(value)
        return value

    def clock(self, handle, which):
        assert handle == "gpu0"
        if which == self.nvml.NVML_CLOCK_SM:
            return self.give("sm", 1980 - 100 * self.reads)
        return self.give("mem", 2619)

    def total_energy(self, handle):
        if not self.energy:
            raise self.nvml.NVMLError(self.nvml.NVML_ERROR_NOT_SUPPORTED)
        return self.give("energy", 1_000_000 + 5000 * self.reads)  # mJ

    def throttle(self, handle):
        mask = self.reasons[min(self.reads, len(self.reasons) - 1)]
        self.reads += 1  # the last call of a reading
        return mask


def test_a_fake_nvml_fills_the_telemetry_columns(tmp_path, monkeypatch, pynvml):
    nvml = FakeNvml(pynvml, monkeypatch)
    (row,) = run_fake(tmp_path, TelemetryDevice(cuda_plugin.nvml_telemetry), repeats=1)["infer"]
    given = nvml.given
    assert nvml.reads >= 2  # before and after the timed steps
    assert float(row["clock_mhz"]) == round(statistics.fmean(given["sm"]))
    assert float(row["clock_mhz_min"]) == min(given["sm"])
    assert float(row["memory_clock_mhz"]) == 2619
    assert float(row["temperature_c"]) == max(given["temp"])
    images = int(row["infer_batch_size"]) * int(row["steps"])
    used_mj = given["energy"][-1] - given["energy"][0]  # the counter is in mJ
    assert float(row["energy_per_image_mj"]) == round(used_mj / images, 3)
    assert float(row["power_w"]) > 0
    assert row["throttled"] == "hw_thermal sw_power_cap"


def test_without_an_energy_counter_power_is_the_mean_reading_and_no_throttle_says_none(tmp_path, monkeypatch,
                                                                                      pynvml):
    nvml = FakeNvml(pynvml, monkeypatch, energy=False, reasons=(0x1,))
    (row,) = run_fake(tmp_path, TelemetryDevice(cuda_plugin.nvml_telemetry), repeats=1)["infer"]
    assert float(row["power_w"]) == round(statistics.fmean(nvml.given["power"]) / 1000, 1)
    assert row["energy_per_image_mj"] == ""
    assert row["throttled"] == "none"


@pytest.mark.parametrize("nvml_state", ["not installed", "no driver"])
def test_without_nvml_the_columns_are_empty_and_the_benchmark_runs(tmp_path, monkeypatch, nvml_state):
    if nvml_state == "not installed":
        monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    else:
        pynvml = pytest.importorskip("pynvml", reason="NVML telemetry needs the nvml extra: pip install 'rbench[nvml]'")

        def no_library():
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    assert cuda_plugin.nvml_telemetry() is None
    (row,) = run_fake(tmp_path, TelemetryDevice(cuda_plugin.nvml_telemetry), repeats=1)["infer"]
    assert row["status"] == "ok"
    assert [row[c] for c in TELEMETRY_COLUMNS] == [""] * len(TELEMETRY_COLUMNS)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cpu_telemetry_reads_cpufreq_the_package_temperature_and_rapl(tmp_path):
    for cpu, khz in ((0, 2_000_000), (1, 3_000_000)):
        write(tmp_path / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", f"{khz}\n")
    write(tmp_path / "class/thermal/thermal_zone0/type", "x86_pkg_temp\n")
    write(tmp_path / "class/thermal/thermal_zone0/temp", "55000\n")
    write(tmp_path / "class/thermal/thermal_zone1/type", "acpitz\n")  # not the package: left out
    write(tmp_path / "class/thermal/thermal_zone1/temp", "90000\n")
    package = tmp_path / "class/powercap/intel-rapl:0"
    write(package / "energy_uj", "900\n")
    write(package / "max_energy_range_uj", "1000\n")
    write(tmp_path / "class/powercap/intel-rapl:0:0/energy_uj", "5\n")  # a sub-domain, inside the package's
    telemetry = SysfsCpuTelemetry(tmp_path)
    assert telemetry.read() == {"clock_mhz": 2500.0, "temperature_c": 55.0, "energy_j": 900e-6}
    write(package / "energy_uj", "100\n")  # wrapped: 1000 range, so 200 uJ were used
    assert telemetry.read()["energy_j"] == pytest.approx(1100e-6)


def test_cpu_telemetry_is_none_where_linux_offers_nothing(tmp_path):
    write(tmp_path / "devices/system/cpu/cpu0/online", "1\n")  # a CPU, but no cpufreq, thermal or RAPL files
    assert rbench.cpu_telemetry(tmp_path) is None


def test_the_summary_of_readings():
    readings = [(10.0, {"clock_mhz": 1000.0, "power_w": 50.0, "energy_j": 100.0, "throttle_reasons": ()}),
                (11.0, {"clock_mhz": 800.0, "temperature_c": 70.0}),
                (12.0, {"clock_mhz": 900.0, "power_w": 70.0, "energy_j": 104.0, "throttle_reasons": ("hw_slowdown",)})]
    columns = telemetry_columns(readings, images=8)
    # by hand: 4 J over 2 s is 2 W; 4000 mJ over 8 images is 500 mJ an image
    assert columns == {"clock_mhz": 900.0, "clock_mhz_min": 800.0, "memory_clock_mhz": None, "power_w": 2.0,
                       "temperature_c": 70.0, "energy_per_image_mj": 500.0, "throttled": "hw_slowdown"}
    assert set(columns) == set(TELEMETRY_COLUMNS)
    without_energy = [(t, {k: v for k, v in r.items() if k != "energy_j"}) for t, r in readings]
    assert telemetry_columns(without_energy, images=8)["power_w"] == 60.0
    assert telemetry_columns([], images=8) == dict.fromkeys(TELEMETRY_COLUMNS)
