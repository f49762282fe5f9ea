"""Source listings in the store are data: loading one runs no code, and a listing that cannot
be read is made again from the data folder, never turning a finished cell into a failure."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import rbench
import rbench.worker.cells
from rbench.store import Store

from .conftest import invoke_apart

QUICK = ["--weights", "random", "--bench", "validate", "--workers", "0", "--img-size", "32"]
MODELS = "test_vit,test_byobnet"


class Payload:
    """What a crafted listing holds: unpickling it runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def images(image_folder) -> Path:
    return image_folder


def run_args(images: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "-m", MODELS, *QUICK, "--data-dir", str(images), "--out", str(out), *extra]


def record_files(store: Path) -> list[Path]:
    return sorted((store / "records").glob("*.json"))


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def first_run(images: Path, out: Path) -> dict[Path, bytes]:
    result = invoke_apart(*run_args(images, out))
    assert result.exit_code == 0, result.output + result.stderr
    found = {p: p.read_bytes() for p in record_files(out / "store")}
    assert len(found) == 2 and all(json.loads(b)["status"] == "ok" for b in found.values())
    return found


def name_listing(store: Path, listing) -> None:
    """Point every validation record at `listing(record)`, as a store that someone else wrote could."""
    for path in record_files(store):
        record = json.loads(path.read_text())
        record["source_listing"] = listing(record)
        path.write_text(json.dumps(record))


def legacy_name(record: dict) -> str:
    """The listing name an rbench that pickled listings gave this record's source."""
    return f"sources/{record['cell']['source']}-{record['cell']['identity']['data']}.pickle"


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("where", ["legacy", "absolute"])
def test_a_crafted_pickle_listing_runs_no_code_in_report_compare_or_a_resumed_run(tmp_path, images, where):
    out = tmp_path / "out"
    store = out / "store"
    first_run(images, out)
    marker = tmp_path / "PWNED"
    crafted = pickle.dumps(Payload(f"id > {marker}"))
    crafted_files = set()
    if where == "legacy":  # a store written when listings were pickles: the record names one in sources/
        for path in (store / "sources").iterdir():
            path.unlink()
        for path in record_files(store):
            crafted_files.add(store / legacy_name(json.loads(path.read_text())))
            (store / legacy_name(json.loads(path.read_text()))).write_bytes(crafted)
        name_listing(store, legacy_name)
    else:  # a record that names a file outside the store
        (tmp_path / "elsewhere.pickle").write_bytes(crafted)
        name_listing(store, lambda record: str(tmp_path / "elsewhere.pickle"))

    report = invoke_apart("report", "--store", str(store), "--out", str(tmp_path / "report"))
    assert not marker.exists()
    no_traceback(report)
    assert report.exit_code == 2  # both records skipped, each with one line; nothing left to report
    skipped = [line for line in report.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and all("rbench run" in line for line in skipped), report.stderr

    compare = invoke_apart("compare", "test_vit", "test_byobnet", "--store", str(store))
    assert not marker.exists()
    assert compare.exit_code == 2 and len(compare.stderr.strip().splitlines()) == 1, compare.stderr
    assert "rbench run" in compare.stderr

    again = invoke_apart(*run_args(images, out))
    assert not marker.exists()
    assert again.exit_code == 0, again.output + again.stderr
    if where == "legacy":  # the listing was made again from the folder; no cell ran again
        assert "0 cell(s) to run" in again.output
    else:  # a record that cannot be scored: its cell runs again, as for a damaged predictions file
        assert "outside" in again.stderr and "2 cell(s) to run" in again.output
    assert sorted(r["model"] for r in rows(out / "results-imagefolder.csv")) == ["test_byobnet@random", "test_vit@random"]
    if where == "legacy":  # a store of the old layout reads in full once it is listed again
        report = invoke_apart("report", "--store", str(store), "--out", str(tmp_path / "report"))
        assert report.exit_code == 0 and not marker.exists(), report.stderr
        assert len(rows(tmp_path / "report" / "results-imagefolder.csv")) == 2
        compare = invoke_apart("compare", "test_vit", "test_byobnet", "--store", str(store))
        assert compare.exit_code == 0 and not marker.exists(), compare.stderr
    assert {p.suffix for p in (store / "sources").iterdir() if p not in crafted_files} == {".json"}


def test_a_listing_in_the_store_is_json_and_a_listing_named_outside_it_is_refused(tmp_path, images):
    out = tmp_path / "out"
    first_run(images, out)
    store = Store(out / "store")
    (listing,) = (out / "store" / "sources").iterdir()
    assert listing.suffix == ".json" and json.loads(listing.read_text())["format"] == "rbench-source-listing"
    json_copy = tmp_path / "copy.json"
    json_copy.write_bytes(listing.read_bytes())
    for name in (str(json_copy), f"sources/../../{json_copy.name}", "records/x.json"):
        with pytest.raises(rbench.DataError, match="outside"):
            store.get_source(name, rbench.registry.get_registry())


def test_a_garbage_listing_is_made_again_and_never_turns_a_good_record_into_a_failure(tmp_path, images):
    out = tmp_path / "out"
    before = first_run(images, out)
    (listing,) = (out / "store" / "sources").iterdir()
    listing.write_bytes(b"\x80\x04garbage, not a listing")

    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(tmp_path / "report"))
    no_traceback(report)
    skipped = [line for line in report.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and all(str(listing) in line and "rbench run" in line for line in skipped), report.stderr

    again = invoke_apart(*run_args(images, out))
    assert again.exit_code == 0, again.output + again.stderr
    assert "0 cell(s) to run" in again.output
    assert {p: p.read_bytes() for p in record_files(out / "store")} == before  # the good records, untouched
    assert not (out / "failures.csv").exists()
    assert sorted(r["model"] for r in rows(out / "results-imagefolder.csv")) == ["test_byobnet@random", "test_vit@random"]
    (kept,) = (out / "store" / "quarantine").iterdir()  # the damaged file set aside, never deleted
    assert kept.read_bytes() == b"\x80\x04garbage, not a listing"
    assert f"{listing}" in again.stderr  # said once, with where it went
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(tmp_path / "report"))
    assert report.exit_code == 0 and len(rows(tmp_path / "report" / "results-imagefolder.csv")) == 2


def test_a_listing_damaged_while_cells_run_skips_them_and_keeps_their_finished_records(tmp_path, images, monkeypatch):
    out = tmp_path / "out"
    before = first_run(images, out)
    real = Store.put_source

    def put_then_damage(self, *args, **kwargs):  # someone else writes the shared store mid-run
        name = real(self, *args, **kwargs)
        (self.root / name).write_bytes(b"garbage")
        return name

    monkeypatch.setattr(Store, "put_source", put_then_damage)
    # Each model's cells in a fresh worker process, which reads the listing from the store.
    again = invoke_apart(*run_args(images, out, "--force", "--executor", "subprocess"))
    no_traceback(again)
    assert again.exit_code == 1  # not every cell ran: scripts should notice
    assert {p: p.read_bytes() for p in record_files(out / "store")} == before  # no failure over a finished record
    assert not (out / "failures.csv").exists()
    assert "skipped" in again.stderr and "rbench run" in again.stderr


def test_out_never_holds_a_results_row_and_a_failure_row_of_one_cell(tmp_path, images, monkeypatch):
    out = tmp_path / "out"
    first_run(images, out)
    assert len(rows(out / "results-imagefolder.csv")) == 2

    def broken(*args, **kwargs):
        raise RuntimeError("no such model today")

    monkeypatch.setattr(rbench.worker.cells, "create_model", broken)
    again = invoke_apart(*run_args(images, out, "--force"))
    assert again.exit_code == 1, again.output + again.stderr
    failed = {r["model"] for r in rows(out / "failures.csv")}
    assert failed == {"test_vit@random", "test_byobnet@random"}
    for path in out.glob("*-imagefolder.csv"):
        assert not failed & {r["model"].split(".")[0] for r in rows(path)}, path
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(out))
    for path in out.glob("*-imagefolder.csv"):
        assert not failed & {r["model"].split(".")[0] for r in rows(path)}, path
    assert report.exit_code == 2 or report.exit_code == 0


# --- callables in a listing: by name, from the data set plugin's own package -------------------

class Offset:
    """A view's score with state: rebuilt from its attributes, never by `__init__`."""

    def __init__(self, offset: float, parts: tuple[int, int]):
        self.offset, self.parts = offset, parts

    def __call__(self, predictions) -> dict[str, float]:
        first, second = self.parts
        return {"shifted": self.offset + first + second + len(predictions)}


def flip(index: int, image):
    return image


def load_kept(request):
    raise AssertionError("the listing is read, the folder is never listed again")


class KeptPlugin:
    @rbench.hookimpl
    def rbench_datasets(self):
        return [rbench.DatasetSpec(name="kept", description="a source with callables", load=load_kept)]


def kept_source(score) -> rbench.Source:
    return rbench.Source(name="kept", root=Path("/data/kept"), samples=[("/data/kept/a.jpg", 1), ("/data/kept/a.jpg", 2)],
                         views=[rbench.ViewSpec(name="kept", score=score, labels=[(1, 3), 2], samples=[0, 1])],
                         sample_transform=flip, identity="v1")


def test_callables_are_kept_by_name_and_rebuilt_only_from_the_data_set_plugins_package(tmp_path):
    from rbench.registry import load_registry

    registry = load_registry(extra=[("test:kept", KeptPlugin())])
    store = Store(tmp_path / "store")
    name = store.put_source(kept_source(Offset(0.5, (1, 2))), "id", registry)
    source = store.get_source(name, registry)
    (view,) = source.views
    assert isinstance(view.score, Offset) and view.score.parts == [1, 2]  # JSON keeps no tuples
    assert view.score(range(4)) == {"shifted": 7.5}
    assert source.sample_transform is flip and view.labels == [(1, 3), 2] and view.samples == [0, 1]
    assert source.samples == [("/data/kept/a.jpg", 1), ("/data/kept/a.jpg", 2)] and source.root == Path("/data/kept")
    with pytest.raises(rbench.DataError, match="not loaded"):  # without the plugin, nothing is resolved
        store.get_source(name, None)

    data = json.loads((store.root / name).read_text())
    for key, ref in [("score", {"class": "subprocess:Popen", "state": {"args": "id"}}),
                     ("score", {"function": "os:system"}),
                     ("score", {"class": "tests.test_listings:Path", "state": {}}),  # imported there, not defined
                     ("sample_transform", {"function": "tests.test_listings:invoke_apart"})]:
        crafted = json.loads(json.dumps(data))
        if key == "score":
            crafted["views"][0]["score"] = ref
        else:
            crafted["sample_transform"] = ref
        text = json.dumps(crafted, sort_keys=True, separators=(",", ":")).encode()
        relative = f"sources/kept-crafted-{hashlib.sha256(text).hexdigest()[:16]}.json"
        (store.root / relative).write_bytes(text)
        with pytest.raises(rbench.DataError, match="cannot be used"):
            store.get_source(relative, registry)

    for score, what in [(lambda predictions: {}, "not module-level"), (os.getcwd, "outside the data set plugin"),
                        (Offset(np.zeros(2), (1, 2)), "ndarray")]:
        with pytest.raises(rbench.PluginError, match=what):
            store.put_source(kept_source(score), "id", registry)
