"""How each of timm's pretrained tags was trained: facts from published sources, kept as rules.

The rules are `recipes.csv` beside this module, one row per rule, read top to bottom; lines that
start with `#` are comments. A rule names the tags it matches with up to three patterns (an empty
pattern matches every tag):

- `tag`: a regex that must match the whole pretrained tag (`a1_in1k`, `(ra|ra2)_in1k`);
- `architecture`: a regex that must match the whole architecture name (`resnet\\d+`);
- `origin`: a regex searched in where the weights come from (the config's `origin_url`, `url`
  and `hf_hub_id`, joined by spaces), e.g. `dl\\.fbaipublicfiles\\.com/deit/`.

Its facts (`FACTS`) are copied from its `source` (a document and the table, section or line the
facts are read from), written as the source writes them; `none` means the source says the
ingredient was not used. An empty cell says nothing: not published, or another rule's. A fact
never comes from a guess.

For a fine-tuned tag (`in22k_ft_in1k`), the facts describe its first supervised training stage
(the pretraining that made the backbone) unless the rule's `note` says otherwise.

When several rules give one fact for a tag, the most specific wins (the one with more patterns);
the others are named in `recipe_source` where they say something different. Two rules equally
specific that give the same fact for one tag are an error of the file (a test checks it on
every tag of the installed timm).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

RECIPES_FILE = Path(__file__).with_name("recipes.csv")

MATCHERS = ("tag", "architecture", "origin")
FACTS = ("recipe", "optimizer", "loss", "epochs", "lr_schedule", "augmentation", "mixup", "cutmix",
         "label_smoothing", "drop_path", "random_erasing", "ema", "repeated_aug")
COLUMNS = (*MATCHERS, *FACTS, "source", "note")
SOURCE_COLUMN = "recipe_source"  # in model_metadata.csv: which source gave which fact


@dataclass(frozen=True)
class RecipeRule:
    """One row of `recipes.csv`: the tags it matches, the facts it gives them, and their source."""

    line: int  # in the file, for messages
    patterns: tuple[tuple[str, re.Pattern | None], ...]  # (matcher, compiled regex or None), in MATCHERS order
    facts: Mapping[str, str]  # fact -> value, only the facts the rule gives, in FACTS order
    source: str
    note: str

    @property
    def specificity(self) -> int:
        """How many patterns the rule sets: the more, the narrower, and it wins over broader rules."""
        return sum(pattern is not None for _, pattern in self.patterns)

    def matches(self, architecture: str, tag: str, origin: str) -> bool:
        """Whether every pattern the rule sets matches the tag (`tag` and `architecture` whole,
        `origin` anywhere in the weights' origin)."""
        text = {"tag": tag, "architecture": architecture, "origin": origin}
        for matcher, pattern in self.patterns:
            if pattern is None:
                continue
            found = pattern.search(text[matcher]) if matcher == "origin" else pattern.fullmatch(text[matcher])
            if not found:
                return False
        return True

    def describe(self) -> str:
        """Where the rule is written, for messages: `recipes.csv line 12`."""
        return f"{RECIPES_FILE.name} line {self.line}"


def parse_rules(lines: Iterable[str]) -> tuple[RecipeRule, ...]:
    """The rules of the CSV text `lines` (comments and blank lines skipped). A malformed row (an
    unknown column, a bad regex, no source, no fact) raises ValueError naming its line."""
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        return ()
    reader = csv.reader(line for _, line in numbered)
    header = next(reader)
    if tuple(header) != COLUMNS:
        raise ValueError(f"{RECIPES_FILE.name} line {numbered[0][0]}: the header must be {','.join(COLUMNS)}")
    rules = []
    for (number, _), cells in zip(numbered[1:], reader):
        where = f"{RECIPES_FILE.name} line {number}"
        if len(cells) != len(COLUMNS):
            raise ValueError(f"{where}: {len(cells)} cells, the header has {len(COLUMNS)}")
        row = {c: v.strip() for c, v in zip(COLUMNS, cells)}
        patterns = []
        for matcher in MATCHERS:
            try:
                patterns.append((matcher, re.compile(row[matcher]) if row[matcher] else None))
            except re.error as e:
                raise ValueError(f"{where}: bad {matcher} regex {row[matcher]!r}: {e}") from None
        facts = {f: row[f] for f in FACTS if row[f]}
        if not row["source"]:
            raise ValueError(f"{where}: a rule must name its source")
        if not facts:
            raise ValueError(f"{where}: a rule must give at least one fact")
        rules.append(RecipeRule(number, tuple(patterns), facts, row["source"], row["note"]))
    return tuple(rules)


@cache
def recipe_rules() -> tuple[RecipeRule, ...]:
    """The rules of the package's `recipes.csv`, read once."""
    return parse_rules(RECIPES_FILE.read_text(encoding="utf-8").splitlines())


def weights_origin(cfg) -> str:
    """Where a pretrained config's weights come from, as the `origin` patterns read it."""
    if cfg is None:
        return ""
    return " ".join(v for v in (cfg.origin_url, cfg.url, cfg.hf_hub_id) if v)


def rules_by_fact(name: str, origin: str, rules: Iterable[RecipeRule] | None = None) -> dict[str, list[RecipeRule]]:
    """For each fact, the rules that give it to the tag `name` (`architecture.tag`), most specific first."""
    architecture, _, tag = name.partition(".")
    found: dict[str, list[RecipeRule]] = {}
    for rule in recipe_rules() if rules is None else rules:
        if rule.matches(architecture, tag, origin):
            for fact in rule.facts:
                found.setdefault(fact, []).append(rule)
    for candidates in found.values():
        candidates.sort(key=lambda r: -r.specificity)  # stable: file order among equals
    return found


def recipe_row(name: str, origin: str, rules: Iterable[RecipeRule] | None = None) -> dict[str, str | None]:
    """The recipe columns of `model_metadata.csv` for the tag `name`: each fact from its most
    specific rule (None where no rule gives it), and `recipe_source` naming the source of each
    fact, and any broader source that says otherwise."""
    by_fact = rules_by_fact(name, origin, rules)
    row: dict[str, str | None] = dict.fromkeys(FACTS)
    used: dict[str, list[str]] = {}  # source -> the facts it gives, in FACTS order
    differing: list[str] = []
    for fact in FACTS:
        if fact not in by_fact:
            continue
        winner, *others = by_fact[fact]
        row[fact] = winner.facts[fact]
        used.setdefault(winner.source, []).append(fact)
        for other in others:
            value = other.facts[fact]
            if not _agrees(row[fact], value):
                differing.append(f"{fact} {value!r} in {other.source}")
    parts = [f"{source} ({', '.join(facts)})" for source, facts in used.items()]
    if differing:
        parts.append("differs: " + "; ".join(differing))
    row[SOURCE_COLUMN] = " | ".join(parts) or None
    return row


def _agrees(specific: str, broad: str) -> bool:
    """Whether a broader rule's value says the same as the winning one, or less of it
    (`RandAugment` beside `RandAugment (rand-m9-mstd0.5)`, `yes` beside an EMA decay)."""
    if broad == "yes":
        return specific != "none"
    return specific.lower().startswith(broad.lower())


def recipe_coverage(rows: Iterable[Mapping[str, Any]]) -> tuple[int, int, dict[str, int]]:
    """Of the metadata `rows`: how many there are, how many have a recipe family and an optimizer,
    and how many have each fact."""
    rows = list(rows)
    both = sum(1 for row in rows if row.get("recipe") and row.get("optimizer"))
    return len(rows), both, {fact: sum(1 for row in rows if row.get(fact)) for fact in FACTS}
