"""Shared fixtures: offline, a private cache folder, and small real-JPEG image folders."""

from __future__ import annotations

import csv
import os
import textwrap
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["COLUMNS"] = "200"  # rich tables one row per line, so tests can read them


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("rbench-cache")
    os.environ["RBENCH_CACHE_DIR"] = str(path)
    yield path


def write_jpegs(folder: Path, count: int, seed: int, min_side: int = 48, max_side: int = 120) -> list[Path]:
    """`count` textured JPEG files of random sizes in `folder`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = rng.integers(min_side, max_side, size=2)
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        path = folder / f"img_{i:03d}.JPEG"
        Image.fromarray(pixels).save(path, quality=85)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """An ImageFolder of 8 classes x 4 real JPEGs; class folders named so that a lexical
    sort and a natural sort differ ("10" after "9")."""
    root = tmp_path / "images"
    for c, name in enumerate(["1", "2", "3", "4", "5", "9", "10", "11"]):
        write_jpegs(root / name, 4, seed=c)
    return root


@pytest.fixture
def images(tmp_path) -> Path:
    """A small ImageFolder: 3 classes x 3 real JPEGs (folders `0`, `1`, `2`)."""
    root = tmp_path / "images"
    for c in range(3):
        write_jpegs(root / str(c), 3, seed=c)
    return root


def make_distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
    """A minimal installed distribution in `site`: a dist-info folder and its modules."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{ep} = {target}" for ep, target in eps.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, code in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(code))


HOLD_PLUGIN = '''
import os
import time

import rbench

_batches = 0


def _hold(batch):
    """Log the batch (the pid of the process running it); from batch RBENCH_TEST_HOLD_AT on,
    wait until the file RBENCH_TEST_RELEASE exists (ten minutes at most: no test hangs forever)."""
    global _batches
    _batches += 1
    with open(os.environ["RBENCH_TEST_BATCHES"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    release = os.environ.get("RBENCH_TEST_RELEASE")
    if release and _batches >= int(os.environ.get("RBENCH_TEST_HOLD_AT", "1")):
        for _ in range(6000):
            if os.path.exists(release):
                break
            time.sleep(0.1)
    return batch


@rbench.hookimpl
def rbench_backends():
    return [rbench.BackendSpec(name="hold", description="waits at a batch until released", modifier=True,
                               prepare_input=_hold)]
'''


class Hold:
    """The `hold` backend modifier (`HOLD_PLUGIN`), installed for subprocesses: a run on a `+hold`
    stack stops at a chosen batch until the test releases it, so a test acts while a cell is
    surely under way, however fast or loaded the machine, instead of sleeping and hoping."""

    def __init__(self, tmp_path: Path):
        site = tmp_path / "hold-site"
        make_distribution(site, "holdplug", {"rbench.backends": {"hold": "holdplug_mod"}}, {"holdplug_mod": HOLD_PLUGIN})
        self.batches, self.release = tmp_path / "hold-batches.log", tmp_path / "hold-release"
        self.batches.touch()
        self.site = site

    def env(self, at: int | None = None) -> dict[str, str]:
        """The environment of a run that holds at its `at`-th batch (None: never)."""
        env = {"PYTHONPATH": os.pathsep.join([str(self.site), os.environ.get("PYTHONPATH", "")]),
               "RBENCH_TEST_BATCHES": str(self.batches)}
        if at is not None:
            env.update(RBENCH_TEST_RELEASE=str(self.release), RBENCH_TEST_HOLD_AT=str(at))
        return env

    def pids(self) -> list[int]:
        """The process of each batch started so far, in order."""
        return [int(line) for line in self.batches.read_text().split()]

    def wait_for(self, batches: int, process=None, limit_s: float = 300) -> list[int]:
        """Wait until `batches` batches have started (the last one is then held); returns `pids()`.
        The limit only stops a broken run from hanging the test; a slow machine just takes longer."""
        import time

        deadline = time.monotonic() + limit_s
        while len(self.pids()) < batches:
            assert process is None or process.poll() is None, "the run ended before reaching the held batch"
            assert time.monotonic() < deadline, f"no batch {batches} within {limit_s:g} s"
            time.sleep(0.05)
        return self.pids()

    def let_go(self) -> None:
        self.release.touch()


def predictions_of(logits, labels, indices=None, view=None):
    """The `rbench.Predictions` a metric or a view's score gets for these logits, made as rbench
    makes them: the logits reduced by the predictions reducer, then selected for the view.

    `indices` are the samples' indices in a source of `max(indices) + 1` samples (default
    0..n-1); `labels` an int or a tuple of acceptable classes per row.
    """
    import torch

    from rbench import Source, ViewSpec
    from rbench.predictions import Reducer, view_predictions

    indices = list(range(len(labels))) if indices is None else list(indices)
    sets = any(isinstance(label, tuple) for label in labels)
    n = max(indices) + 1
    by_index = dict(zip(indices, labels))
    samples = [(f"img{i}", 0 if sets or i not in by_index else int(by_index[i])) for i in range(n)]
    view = view or ViewSpec(name="v")
    view = ViewSpec(name=view.name, samples=indices, labels=list(labels) if sets else None, classes=view.classes)
    source = Source(name="s", root=Path("."), samples=samples, views=[view])
    reducer = Reducer(source)
    full = torch.zeros(n, logits.shape[1])
    full[torch.as_tensor(indices)] = torch.as_tensor(logits).float()
    reducer.add(full, torch.arange(n), torch.ones(n, dtype=torch.bool))
    return view_predictions(reducer.frame(), source, view)


def invoke_apart(*args: str):
    """`rbench ARGS` through click's runner, with the result's `stderr` apart from its `output`
    (click 8.2 keeps them apart by itself; 8.1 needs `mix_stderr=False`)."""
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(main, list(args))


def invoke_run(*args: str):
    """`rbench run ARGS` in this process, through click's runner."""
    from click.testing import CliRunner

    from rbench.frontend.cli import main

    return CliRunner().invoke(main, ["run", *args])


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, as text, keyed by its header."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_csv_row(path: Path) -> dict[str, str]:
    """The only row of a CSV file (asserts there is one)."""
    rows = csv_rows(path)
    assert len(rows) == 1
    return rows[0]
