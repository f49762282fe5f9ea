"""NVIDIA GPU backends: fp32 (TF32 matmuls), fp16 or bf16 autocast (AMP), and pure fp16 or bf16.

Steps are timed with CUDA events, peak memory is the caching allocator's peak, and the cache is
emptied after each model so that the next one starts from a clean allocator. Telemetry comes
from NVML (`pip install 'rbench[nvml]'`, the `pynvml` module of nvidia-ml-py): SM and memory
clocks, power, temperature, the total-energy counter (Volta and later) and the clock-event
(throttle) reasons. Each cell reserves one GPU on Ray.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import rbench


def _unavailable() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


def _device_tag() -> str:
    """`cu130-h200`: the CUDA version torch was built with, then a short GPU name."""
    import torch

    cuda = "cu" + (torch.version.cuda or "").replace(".", "")
    name = torch.cuda.get_device_name().lower()
    name = re.sub(r"\b(nvidia|geforce|tesla)\b", " ", name)
    return f"{cuda}-{re.sub(r'[^a-z0-9]+', '', name)}"


def _allow_tf32() -> None:
    import torch

    # As timm's benchmark and validate scripts do: TF32 matmuls and convolutions for fp32 on
    # Ampere and later, and cuDNN autotuning (its cost lands in the first call, not the steps).
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def _to_cuda(dtype_name: str | None):
    """A function that moves a batch (or model) to the GPU, cast to `dtype_name` when given."""

    def to_cuda(x):
        import torch

        return x.to("cuda", dtype=getattr(torch, dtype_name)) if dtype_name else x.to("cuda")

    return to_cuda


def _prepare_model(dtype_name: str | None):
    move = _to_cuda(dtype_name)

    def prepare_model(model):
        _allow_tf32()
        return move(model)

    return prepare_model


def _autocast(dtype_name: str):
    def autocast():
        import torch

        return torch.autocast("cuda", dtype=getattr(torch, dtype_name))

    return autocast


def _synchronize() -> None:
    import torch

    torch.cuda.synchronize()


class _EventTimer:
    """A `StepTimer` of CUDA events: markers in the stream, read once after the last step, so the
    host never waits between steps and host-side launch gaps are not hidden."""

    def __init__(self) -> None:
        import torch

        self._event = torch.cuda.Event
        self._pairs: list[tuple] = []

    def start(self) -> None:
        begin = self._event(enable_timing=True)
        begin.record()
        self._pairs.append((begin, None))

    def stop(self) -> None:
        end = self._event(enable_timing=True)
        end.record()
        self._pairs[-1] = (self._pairs[-1][0], end)

    def times_ms(self) -> list[float]:
        _synchronize()
        return [begin.elapsed_time(end) for begin, end in self._pairs]


def _reset_peak_memory() -> None:
    import torch

    torch.cuda.reset_peak_memory_stats()


def _peak_memory() -> int:
    import torch

    return torch.cuda.max_memory_allocated()


def _empty_cache() -> None:
    import torch

    torch.cuda.empty_cache()


# NVML's clock-event reasons that hold the clocks down under load, by their bit. Idle, the
# applications-clocks setting, sync boost and the display clock are left out: they are not
# the device slowing itself down while it works.
THROTTLE_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}


class NvmlTelemetry:
    """A `Telemetry` of one GPU through NVML; a sensor the GPU does not have is left out."""

    def __init__(self, handle) -> None:
        import pynvml

        self._nvml, self._handle = pynvml, handle

    def _value(self, read: Callable[[], float]) -> float | None:
        try:
            return read()
        except self._nvml.NVMLError:  # not supported on this GPU or driver
            return None

    def read(self) -> rbench.TelemetryReading:
        nvml, handle = self._nvml, self._handle
        # Renamed "clock event reasons" in newer NVML; the old name is kept for old drivers.
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        found = {
            "clock_mhz": self._value(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            "memory_clock_mhz": self._value(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            "power_w": self._value(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            "temperature_c": self._value(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "energy_j": self._value(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0),
        }
        reading: rbench.TelemetryReading = {k: float(v) for k, v in found.items() if v is not None}  # type: ignore[assignment]
        mask = self._value(lambda: reasons(handle))
        if mask is not None:
            reading["throttle_reasons"] = tuple(name for bit, name in THROTTLE_REASONS.items() if int(mask) & bit)
        return reading


def _nvml_handle(nvml):
    """The NVML handle of torch's current GPU: by UUID (CUDA_VISIBLE_DEVICES reorders indices), else by index."""
    import torch

    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    uuid = getattr(properties, "uuid", None)
    if uuid is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except nvml.NVMLError:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())


def nvml_telemetry() -> NvmlTelemetry | None:
    """Telemetry of the current GPU, or None without nvidia-ml-py or a working NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        return NvmlTelemetry(_nvml_handle(pynvml))
    except pynvml.NVMLError:  # no driver library, no permission
        return None


def _cuda_backend(name: str, description: str, precision: str, priority: int, *, dtype: str | None = None,
                  **kwargs) -> rbench.BackendSpec:
    return rbench.BackendSpec(
        name=name,
        description=description,
        device="cuda",
        precision=precision,
        priority=priority,
        pin_memory=True,
        unavailable=_unavailable,
        device_tag=_device_tag,
        prepare_model=_prepare_model(dtype),
        prepare_input=_to_cuda(dtype),
        synchronize=_synchronize,
        timer=_EventTimer,
        reset_peak_memory=_reset_peak_memory,
        peak_memory=_peak_memory,
        cleanup=_empty_cache,
        telemetry=nvml_telemetry,
        ray_resources={"num_gpus": 1},
        **kwargs,
    )


@rbench.hookimpl
def rbench_backends():
    return [
        _cuda_backend("cuda", "NVIDIA GPU, fp32 (TF32 matmuls)", "fp32", 10),
        _cuda_backend("cuda-amp", "NVIDIA GPU, fp16 autocast", "amp", 30, autocast=_autocast("float16")),
        _cuda_backend("cuda-amp-bf16", "NVIDIA GPU, bf16 autocast", "amp_bf16", 20, autocast=_autocast("bfloat16")),
        _cuda_backend("cuda-fp16", "NVIDIA GPU, model and input in fp16", "fp16", 5, dtype="float16"),
        _cuda_backend("cuda-bf16", "NVIDIA GPU, model and input in bf16", "bf16", 6, dtype="bfloat16"),
    ]
