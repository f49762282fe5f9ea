"""ONNX Runtime backend (`onnxruntime`): the model exported with `torch.onnx`, run by an
`InferenceSession` on the best execution provider here: TensorRT, else CUDA, else the CPU's.

The export happens on the first call and is timed as compile time (`compile_s` in the detailed
benchmark file). A model the exporter rejects fails its cell with the exporter's reason
(`export-failed`), and the grid goes on. Inference only: a train benchmark is a failed row.
Needs `pip install 'rbench[onnx]'` (onnxruntime, onnx, onnxscript).
"""

from __future__ import annotations

import rbench

PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# The dynamo exporter's summary line: "<class '...DispatchError'>: No ONNX function found for ...".
REASON = r"^<class '[\w.]*?(\w+)'>: (.*)$"


def _unavailable() -> str | None:
    import importlib.util

    missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed; pip install 'rbench[onnx]'" if missing else None


def _providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in PROVIDERS if p in available]


def _device_tag() -> str:
    """`cpu-<cpu>` on the CPU execution provider; `cuda-<gpu>` or `trt-<gpu>` on a GPU's."""
    best = _providers()[0]
    if best == "CPUExecutionProvider":
        return rbench.cpu_tag()
    import re

    import torch

    gpu = torch.cuda.get_device_name().lower().replace("nvidia", "") if torch.cuda.is_available() else "gpu"
    return f"{'trt' if best.startswith('Tensorrt') else 'cuda'}-{re.sub(r'[^a-z0-9]+', '', gpu)}"


def _gpu_build() -> bool:
    """Whether the installed ONNX Runtime is the GPU build (the only one with the CUDA and
    TensorRT providers), read from the package metadata without importing it."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _telemetry():
    """The host CPU's readings on the CPU execution provider; none yet on a GPU's."""
    return rbench.cpu_telemetry() if _providers()[0] == "CPUExecutionProvider" else None


def _onnx_bytes(model, example, dynamic: bool) -> bytes:
    import inspect
    import io

    import torch

    buffer = io.BytesIO()
    names = dict(input_names=["input"], output_names=["logits"])
    if "dynamic_shapes" in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5: torch.export's exporter
        shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
        torch.onnx.export(model, (example,), buffer, dynamo=True, dynamic_shapes=shapes, verbose=False, **names)
    else:  # torch 2.4: the TorchScript exporter
        axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
        torch.onnx.export(model, (example,), buffer, dynamic_axes=axes, opset_version=17, **names)
    return buffer.getvalue()


def _convert(model, example, dynamic: bool):
    import onnxruntime

    try:
        program = _onnx_bytes(model, example, dynamic)
    except Exception as exc:  # noqa: BLE001 - every exporter failure is this model's, with its reason
        raise rbench.ExportError(f"torch.onnx.export failed: {rbench.exporter_reason(exc, REASON)}") from None
    session = onnxruntime.InferenceSession(program, providers=_providers())
    name = session.get_inputs()[0].name

    def run(array):
        return session.run(None, {name: array})[0]

    return run


def _prepare(model):
    return rbench.ExportedModel(model, _convert, "onnxruntime")


@rbench.hookimpl
def rbench_backends():
    return [
        rbench.BackendSpec(
            name="onnxruntime",
            description="ONNX Runtime: torch.onnx export, TensorRT/CUDA/CPU execution provider (inference only)",
            device="cpu",  # torch's side: batches are made on the CPU and handed to the session
            precision="fp32",
            suffix="onnxruntime",
            compiles=True,  # the first call exports: reported as compile_s, never a step
            priority=-20,
            unavailable=_unavailable,
            device_tag=_device_tag,
            telemetry=_telemetry,
            prepare_model=_prepare,
            ray_resources={"num_gpus": 1} if _gpu_build() else {},  # a GPU provider's session needs the GPU
        )
    ]
