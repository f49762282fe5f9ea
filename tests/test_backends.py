"""Backend stacks: parsing, composition, and the names they give benchmark files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rbench import BackendSpec, hookimpl
from rbench.worker.backends import BackendStack, best_stack, resolve_stack, torch_tag
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


def test_compile_mode_is_a_stack_option_and_part_of_the_file_name(monkeypatch):
    registry = load_registry()
    monkeypatch.delenv("RBENCH_COMPILE_MODE", raising=False)
    plain = resolve_stack("cpu+compile", registry)
    assert plain.name == "cpu+compile" and plain.file_tag().endswith("-dynamo")
    autotuned = resolve_stack("cpu+channels-last+compile:max-autotune", registry)
    assert autotuned.name == "cpu+channels-last+compile:max-autotune"
    assert autotuned.file_tag().endswith("-dynamo_max_autotune")
    asked = []
    monkeypatch.setattr(torch, "compile", lambda model, mode, backend: asked.append((mode, backend)) or model)
    autotuned.prepare_model(torch.nn.Linear(2, 2))
    plain.prepare_model(torch.nn.Linear(2, 2))
    assert asked == [("max-autotune", "inductor"), ("default", "inductor")]


def test_the_environment_gives_the_default_compile_mode_and_the_option_wins(monkeypatch):
    monkeypatch.setenv("RBENCH_COMPILE_MODE", "reduce-overhead")
    registry = load_registry()
    from_env = resolve_stack("cpu+compile", registry)
    assert (from_env.name, from_env.file_tag().rsplit("-", 1)[1]) == ("cpu+compile:reduce-overhead",
                                                                      "dynamo_reduce_overhead")
    assert resolve_stack("cpu+compile:default", registry).file_tag().endswith("-dynamo")
    # the stack's name resolves to the same stack again (a worker resolves it from the job)
    assert resolve_stack(from_env.name, registry).file_tag() == from_env.file_tag()


@pytest.mark.parametrize(("stack", "message"), [
    ("cpu+compile:fastest", "backend stack 'cpu+compile:fastest': 'compile' has no option 'fastest'; it takes one "
                            "of default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"),
    ("cpu:fast", "backend stack 'cpu:fast': 'cpu' has no option 'fast'; it takes no option"),
])
def test_an_unknown_option_is_a_one_line_error(stack, message):
    from click.testing import CliRunner

    from rbench.frontend.cli import main
    from rbench.errors import UnknownNameError

    with pytest.raises(UnknownNameError) as raised:
        resolve_stack(stack, load_registry())
    assert str(raised.value).startswith(message)
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--bench", "infer", "-b", stack, "--dry-run"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output


class OptionedAccelerator:
    """A test plugin: a base backend with options of its own, each configuring its precision."""

    @hookimpl
    def rbench_backends(self):
        def configure(option):
            return BACKEND if option in (None, "fp32") else dataclasses.replace(
                BACKEND, name=f"npu:{option}", precision=option)

        BACKEND = BackendSpec(name="npu", description="npu", device="cpu", device_tag=lambda: "npu-x1",
                              options={"fp32": "full precision", "bf16": "bf16"}, configure=configure)
        return [BACKEND]


def test_any_backend_may_declare_options():
    registry = load_registry(extra=[("test:npu", OptionedAccelerator())])
    assert resolve_stack("npu", registry).file_tag() == f"fp32-nchw-{torch_tag()}-npu-x1"
    stack = resolve_stack("npu:bf16+channels-last", registry)
    assert (stack.name, stack.file_tag()) == ("npu:bf16+channels-last", f"bf16-nhwc-{torch_tag()}-npu-x1")
