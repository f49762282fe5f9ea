"""NVIDIA GPU backends: fp32, and fp16 or bf16 autocast (AMP)."""

from __future__ import annotations

import re

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


def _to_cuda(x):
    return x.to("cuda")


def _prepare_fp32_model(model):
    import torch

    # timm's benchmark and validate scripts allow TF32 matmuls for fp32 on Ampere and later.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return model.to("cuda")


def _autocast(dtype_name: str):
    def autocast():
        import torch

        return torch.autocast("cuda", dtype=getattr(torch, dtype_name))

    return autocast


def _synchronize() -> None:
    import torch

    torch.cuda.synchronize()


def _cuda_backend(name: str, description: str, precision: str, priority: int, **kwargs) -> rbench.BackendSpec:
    return rbench.BackendSpec(
        name=name,
        description=description,
        device="cuda",
        precision=precision,
        priority=priority,
        unavailable=_unavailable,
        device_tag=_device_tag,
        prepare_model=_prepare_fp32_model,
        prepare_input=_to_cuda,
        synchronize=_synchronize,
        **kwargs,
    )


@rbench.hookimpl
def rbench_backends():
    return [
        _cuda_backend("cuda", "NVIDIA GPU, fp32 (TF32 matmuls)", "fp32", 10),
        _cuda_backend("cuda-amp", "NVIDIA GPU, fp16 autocast", "amp", 30, autocast=_autocast("float16")),
        _cuda_backend("cuda-amp-bf16", "NVIDIA GPU, bf16 autocast", "amp_bf16", 20, autocast=_autocast("bfloat16")),
    ]
