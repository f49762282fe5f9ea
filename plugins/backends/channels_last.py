"""The channels-last modifier: NHWC memory format for the model and its input."""

from __future__ import annotations

import rbench


def _channels_last(x):
    import torch

    # Only 4-D inputs have an NHWC layout; parameters of other ranks stay as they are.
    if isinstance(x, torch.Tensor) and x.dim() != 4:
        return x
    return x.to(memory_format=torch.channels_last)


@rbench.hookimpl
def rbench_backends():
    return [
        rbench.BackendSpec(
            name="channels-last",
            description="modifier: NHWC memory format (stacks on any base, e.g. cuda-amp+channels-last)",
            modifier=True,
            layout="nhwc",
            prepare_model=_channels_last,
            prepare_input=_channels_last,
        )
    ]
