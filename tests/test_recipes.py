"""Training recipes in the metadata: the rule file's integrity on every tag of the installed timm,
facts equal to their sources' own text (quoted in tests/data/recipe_quotes/ with their location),
the resolution of overlapping rules, and the coverage that `rbench metadata -m all` prints."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import timm
from click.testing import CliRunner

from rbench.frontend.cli import main
from rbench.worker.recipes import (COLUMNS, FACTS, RECIPES_FILE, parse_rules, recipe_row, recipe_rules,
                                   rules_by_fact, weights_origin)

QUOTES_DIR = Path(__file__).parent / "data" / "recipe_quotes"
# Values that a source states by a mark or a word rather than by the value itself (a ✓ or ✗ in a
# table, "EMA" in a list, "No CutMix"): each such quote says how it is read.
STATED_BY_MARK = {"yes", "none"}


def _all_tags() -> list[tuple[str, str, int]]:
    """(tag, origin, classes) of every pretrained tag of the installed timm."""
    found = []
    for name in timm.list_pretrained():
        cfg = timm.models.get_pretrained_cfg(name)
        found.append((name, weights_origin(cfg), cfg.num_classes if cfg else None))
    return found


@pytest.fixture(scope="module")
def all_tags():
    return _all_tags()


def test_every_rule_names_a_source_and_gives_a_fact():
    rules = recipe_rules()
    assert len(rules) >= 10
    for rule in rules:
        assert rule.source.strip() and rule.facts, rule.describe()
        assert all(value.strip() == value and value for value in rule.facts.values()), rule.describe()


def test_a_malformed_rule_names_its_line():
    header = ",".join(COLUMNS)
    empty = "," * (len(COLUMNS) - 1)

    def row(**cells):
        return ",".join(cells.get(c, "") for c in COLUMNS)

    with pytest.raises(ValueError, match="line 3: a rule must name its source"):
        parse_rules(["# comment", header, row(tag="a1_in1k", recipe="X")])
    with pytest.raises(ValueError, match="line 2: a rule must give at least one fact"):
        parse_rules([header, row(tag="a1_in1k", source="S")])
    with pytest.raises(ValueError, match=r"line 2: bad tag regex '\('"):
        parse_rules([header, row(tag="(", recipe="X", source="S")])
    with pytest.raises(ValueError, match="line 2: 2 cells"):
        parse_rules([header, "a,b"])
    with pytest.raises(ValueError, match="line 1: the header must be"):
        parse_rules(["tag,recipe", empty])


def test_no_tag_takes_one_fact_from_two_equally_specific_rules(all_tags):
    """Every tag matches at most one rule per fact at the most specific level that gives it."""
    clashes = []
    for name, origin, _ in all_tags:
        for fact, rules in rules_by_fact(name, origin).items():
            top = [r for r in rules if r.specificity == rules[0].specificity]
            if len(top) > 1:
                clashes.append(f"{name} {fact}: " + ", ".join(r.describe() for r in top))
    assert not clashes, "\n".join(clashes[:20])


def test_every_rule_matches_a_tag_of_the_installed_timm(all_tags):
    matched = set()
    for name, origin, _ in all_tags:
        architecture, _, tag = name.partition(".")
        matched.update(r.line for r in recipe_rules() if r.matches(architecture, tag, origin))
    dead = [r.describe() for r in recipe_rules() if r.line not in matched]
    assert not dead, f"rules that match no tag (a typo in a pattern?): {dead}"


def _quotes():
    for path in sorted(QUOTES_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for entry in data["quotes"]:
            yield pytest.param(data["source"], entry, id=f"{path.stem}:{entry['tag']}")


@pytest.mark.parametrize(("source", "entry"), list(_quotes()))
def test_facts_equal_the_quoted_source(source, entry):
    """The tag's row gives each fact exactly as the quoted source text says it (read as noted
    where the source states it by a mark), and names that source for it."""
    name = entry["tag"]
    assert timm.list_pretrained(name) == [name], f"{name} is not a pretrained tag of this timm"
    row = recipe_row(name, weights_origin(timm.models.get_pretrained_cfg(name)))
    reading = entry.get("reading", {})
    for fact, value in entry["facts"].items():
        assert fact in FACTS
        assert row[fact] == value, (name, fact, row[fact], value)
        if value is None:
            continue
        said = value.lower() in entry["quote"].lower()
        assert said or fact in reading, f"{name} {fact}: {value!r} is not in the quote and no reading says why"
    assert entry["location"] and entry["quote"]
    # the source named for the tag's facts is the one quoted
    assert any(part for part in (row["recipe_source"] or "").split(" | ")
               if _document(source) in part and entry["location"].split(",")[0] in part), row["recipe_source"]


def _document(source: str) -> str:
    """The document part of a quote file's `source` (`timm hfdocs/source/hparams.mdx (...)` -> its path)."""
    return source.split(" (")[0].strip()


def test_the_most_specific_rule_wins_and_the_other_source_is_named():
    header = ",".join(COLUMNS)

    def row(**cells):
        return ",".join(cells.get(c, "") for c in COLUMNS)

    rules = parse_rules([
        header,
        row(tag="ra2_in1k", recipe="RA2", optimizer="RMSProp", epochs="450", ema="yes", source="family table"),
        row(tag="ra2_in1k", architecture="resnet50d", epochs="600", ema="0.9999", source="model card"),
        row(architecture="resnet50d", loss="CE", augmentation="RandAugment", source="architecture page"),
        row(tag="ra2_in1k", architecture="resnet50d", augmentation="RandAugment (rand-m9-mstd0.5)", source="model card"),
    ])
    got = recipe_row("resnet50d.ra2_in1k", "", rules)
    assert (got["recipe"], got["optimizer"], got["epochs"], got["ema"], got["loss"]) == ("RA2", "RMSProp", "600", "0.9999", "CE")
    # sources in the order of the first fact each gives (FACTS: recipe, optimizer, loss, epochs, ...)
    # a broader value that says less of the same (`RandAugment`; `yes` beside the decay) is not a disagreement
    assert got["augmentation"] == "RandAugment (rand-m9-mstd0.5)"
    assert got["recipe_source"] == ("family table (recipe, optimizer) | architecture page (loss) | "
                                    "model card (epochs, augmentation, ema) | "
                                    "differs: epochs '450' in family table")
    other = recipe_row("resnet50.ra2_in1k", "", rules)  # the narrower rule does not reach it
    assert other["epochs"] == "450" and other["loss"] is None and other["ema"] == "yes"
    # `none` where the broader rule says `yes` is a disagreement, noted
    off = parse_rules([header, row(tag="ra2_in1k", ema="yes", source="family table"),
                       row(tag="ra2_in1k", architecture="resnet50d", ema="none", source="model card")])
    assert recipe_row("resnet50d.ra2_in1k", "", off)["recipe_source"] == (
        "model card (ema) | differs: ema 'yes' in family table")
    assert recipe_row("vgg11.tv_in1k", "", rules) == {**dict.fromkeys(FACTS), "recipe_source": None}


def test_origin_patterns_search_where_the_weights_come_from():
    header = ",".join(COLUMNS)
    line = ",".join({"origin": r"dl\.fbaipublicfiles\.com/deit/", "recipe": "DeiT", "source": "S"}.get(c, "")
                    for c in COLUMNS)
    rules = parse_rules([header, line])
    name = "deit_tiny_patch16_224.fb_in1k"
    origin = weights_origin(timm.models.get_pretrained_cfg(name))
    assert recipe_row(name, origin, rules)["recipe"] == "DeiT"
    resnet = "resnet50.a1_in1k"
    assert recipe_row(resnet, weights_origin(timm.models.get_pretrained_cfg(resnet)), rules)["recipe"] is None


def test_metadata_prints_the_coverage_of_the_whole_zoo(tmp_path, all_tags):
    """`rbench metadata -m all` prints how many 1000-class tags have a recipe family and an
    optimizer; the printed count equals a count over the written file and over the tag list,
    and reaches the floor of 60% on the installed timm."""
    result = CliRunner().invoke(main, ["metadata", "-m", "all", "--no-counts", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    printed = re.search(r"recipe family and optimizer known for (\d+) of (\d+) 1000-class tags", result.output)
    assert printed, result.output[-2000:]
    known, total = int(printed[1]), int(printed[2])
    with open(tmp_path / "model_metadata.csv", newline="") as f:
        written = [row for row in csv.DictReader(f) if row["num_classes"] == "1000"]
    in1k = [(name, origin) for name, origin, classes in all_tags if classes == 1000]
    assert total == len(written) == len(in1k)
    assert known == sum(1 for row in written if row["recipe"] and row["optimizer"])
    brute = 0
    for name, origin in in1k:  # each fact from the rules that match, read directly
        architecture, _, tag = name.partition(".")
        matching = [r for r in recipe_rules() if r.matches(architecture, tag, origin)]
        brute += any("recipe" in r.facts for r in matching) and any("optimizer" in r.facts for r in matching)
    assert known == brute
    assert known / total >= 0.60, f"{known} of {total} 1000-class tags have a recipe family and an optimizer"
