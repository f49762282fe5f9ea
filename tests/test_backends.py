"""Backend stacks: parsing, composition, and the names they give benchmark files."""

from __future__ import annotations

import pytest
import torch

from rbench import BackendSpec, hookimpl
from rbench.backends import BackendStack, best_stack, resolve_stack, torch_tag
from rbench.errors import UnavailableError
from rbench.host import short_cpu_name
from rbench.registry import load_registry


class FakeAccelerator:
    """A test plugin: a base backend that is always available and a modifier with a suffix."""

    @hookimpl
    def rbench_backends(self):
        return [
            BackendSpec(name="fake", description="fake", device="cpu", precision="bf16", priority=100,
                        device_tag=lambda: "fake-x1", prepare_input=lambda x: x.to(torch.bfloat16),
                        prepare_model=lambda m: m.to(torch.bfloat16)),
            BackendSpec(name="fake-compile", description="m", modifier=True, suffix="dynamo"),
            BackendSpec(name="never", description="n", unavailable=lambda: "no such device"),
        ]


@pytest.fixture
def registry():
    return load_registry(extra=[("test:fake", FakeAccelerator())])


def test_stack_file_tags(registry):
    assert resolve_stack("cpu", registry).file_tag() == f"fp32-nchw-{torch_tag()}-{registry.backends['cpu'].device_tag()}"
    stack = resolve_stack("fake+channels-last+fake-compile", registry)
    assert stack.name == "fake+channels-last+fake-compile"
    assert stack.file_tag() == f"bf16-nhwc-{torch_tag()}-fake-x1-dynamo"


def test_stack_prepares_model_and_input_through_every_member(registry):
    stack = resolve_stack("fake+channels-last", registry)
    x = stack.prepare_input(torch.zeros(2, 3, 8, 8))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    model = stack.prepare_model(torch.nn.Conv2d(3, 4, 3))
    assert model.weight.dtype == torch.bfloat16
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


def test_best_stack_takes_the_highest_available_priority(registry):
    assert best_stack(registry).name == "fake"
    assert best_stack(load_registry()).name == ("cuda-amp" if torch.cuda.is_available() else "cpu")


def test_unavailable_backend_in_a_stack_is_refused(registry):
    with pytest.raises(UnavailableError, match="'never' is not available here: no such device"):
        resolve_stack("never+channels-last", registry)


def test_torch_tag():
    assert torch_tag() == "pt" + torch.__version__.split("+")[0].replace(".", "")
    assert BackendStack(load_registry().backends["cpu"]).layout == "nchw"


@pytest.mark.parametrize(
    ("model_name", "short"),
    [
        ("Intel(R) Core(TM) i7-12700H", "i7_12700h"),
        ("Intel(R) Core(TM) i9-10940X CPU @ 3.30GHz", "i9_10940x"),
        ("AMD EPYC 9654 96-Core Processor", "epyc_9654"),
        ("AMD Ryzen 9 7950X 16-Core Processor", "ryzen_9_7950x"),
    ],
)
def test_short_cpu_names(model_name, short):
    assert short_cpu_name(model_name) == short
