"""OpenVINO backend (`openvino`, CPU): the model converted from PyTorch by
`openvino.convert_model` and compiled for the CPU plugin at fp32.

The CPU plugin would otherwise run in bf16 on processors that have it (its default
`INFERENCE_PRECISION_HINT`), which is another precision, not another runtime. Conversion happens
on the first call and is timed as compile time (`compile_s` in the detailed benchmark file); a
model the converter rejects fails its cell with the converter's reason (`export-failed`).
Inference only: a train benchmark is a failed row. Needs `pip install 'rbench[openvino]'`.
"""

from __future__ import annotations

import rbench

CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
# The converter's summary line: "-- No conversion rule found for operations: aten::linalg_eig".
REASON = r"^-- (.*)$"


def _unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("openvino") else "openvino is not installed; pip install 'rbench[openvino]'"


def _convert(model, example, dynamic: bool):
    import openvino

    shape = [-1 if dynamic else example.shape[0], *example.shape[1:]]
    try:
        converted = openvino.convert_model(model, example_input=example, input=[openvino.PartialShape(shape)])
    except Exception as exc:  # noqa: BLE001 - every converter failure is this model's, with its reason
        raise rbench.ExportError(f"openvino.convert_model failed: {rbench.exporter_reason(exc, REASON)}") from None
    compiled = openvino.Core().compile_model(converted, "CPU", CONFIG)

    def run(array):
        return compiled(array)[0]

    return run


def _prepare(model):
    return rbench.ExportedModel(model, _convert, "openvino")


@rbench.hookimpl
def rbench_backends():
    return [
        rbench.BackendSpec(
            name="openvino",
            description="OpenVINO on the CPU, fp32: openvino.convert_model (inference only)",
            device="cpu",
            precision="fp32",
            suffix="openvino",
            compiles=True,  # the first call converts and compiles: reported as compile_s, never a step
            priority=-20,
            unavailable=_unavailable,
            device_tag=rbench.cpu_tag,
            telemetry=rbench.cpu_telemetry,
            prepare_model=_prepare,
        )
    ]
