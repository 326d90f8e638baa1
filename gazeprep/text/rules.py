"""Loading the labeler's rule data (``rules/``): phrase files, YAML files, label definitions.

Everything here is data parsing only; no matching. Phrase files hold one phrase per line, ``#``
comments, and ``{a|b|}`` alternatives (an empty alternative drops the slot), e.g.
``{left |right |}pleural effusion{|s}``. See ``rules/README.md``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gazeprep.errors import RecipeError
from gazeprep.paths import default_rules_dir

_BRACES = re.compile(r"\{([^{}]*)\}")


def expand_phrase(line: str) -> list[str]:
    """All phrases described by one phrase-file line (``{a|b|}`` alternatives, whitespace collapsed).

    Hyphenated phrases also yield their spaced and joined forms ("ground-glass" -> "ground glass",
    "groundglass"), since dictation writes all three.
    """
    parts = _BRACES.split(line)
    # even indices: literal text, odd indices: alternatives
    choices = [[p] if i % 2 == 0 else p.split("|") for i, p in enumerate(parts)]
    out: list[str] = []
    for combo in itertools.product(*choices):
        phrase = " ".join("".join(combo).split()).lower()
        if not phrase:
            continue
        variants = [phrase]
        if "-" in phrase and phrase != "-":
            variants += [" ".join(phrase.replace("-", " ").split()), phrase.replace("-", "")]
        for v in variants:
            if v and v not in out:
                out.append(v)
    return out


def read_phrase_file(path: Path) -> list[str]:
    """Phrases of one phrase file, expanded, in file order without duplicates."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read rule file: {exc}") from None
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        for p in expand_phrase(line):
            if p not in out:
                out.append(p)
    return out


def read_yaml(path: Path) -> dict:
    """A rule YAML file (``yaml.safe_load``), which must be a mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read rule file: {exc}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a rule file must be a mapping")
    return data


@dataclass(frozen=True)
class LabelDefs:
    """``rules/labels.yaml``: canonical ids, implications, groups, source maps, thresholds."""

    names: dict[str, str]
    implies: dict[str, tuple[str, ...]]  # direct implications
    groups: dict[str, tuple[str, ...]]
    # source -> source_label -> (labels, value kind)
    sources: dict[str, dict[str, tuple[tuple[str, ...], str]]]
    thresholds: dict[str, float | bool] = field(default_factory=dict)

    def closure(self, label: str) -> tuple[str, ...]:
        """``label`` followed by every label it implies, transitively (depth-first, no duplicates)."""
        out: list[str] = []
        stack = [label]
        while stack:
            x = stack.pop(0)
            if x in out:
                continue
            out.append(x)
            stack.extend(self.implies.get(x, ()))
        return tuple(out)


_VALUE_KINDS = {"certainty", "chexpert", "binary"}


def load_label_defs(rules_dir: Path) -> LabelDefs:
    """Parse and check ``labels.yaml`` (unknown ids anywhere raise :class:`RecipeError`)."""
    path = rules_dir / "labels.yaml"
    data = read_yaml(path)
    raw = data.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise RecipeError(f"{path}: 'labels' must be a non-empty mapping")
    names: dict[str, str] = {}
    implies: dict[str, tuple[str, ...]] = {}
    for lid, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise RecipeError(f"{path}: labels.{lid} must be a mapping")
        names[str(lid)] = str(spec.get("name", lid))
        implies[str(lid)] = tuple(str(x) for x in spec.get("implies", []) or [])

    def check(ids, where):
        for x in ids:
            if x not in names:
                raise RecipeError(f"{path}: {where}: unknown label id {x!r}")

    for lid, imp in implies.items():
        check(imp, f"labels.{lid}.implies")
    groups = {}
    for g, ids in (data.get("groups") or {}).items():
        ids = tuple(str(x) for x in ids)
        check(ids, f"groups.{g}")
        groups[str(g)] = ids
    sources: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {}
    for src, spec in (data.get("sources") or {}).items():
        default_kind = spec.get("value", "binary")
        if default_kind not in _VALUE_KINDS:
            raise RecipeError(f"{path}: sources.{src}.value must be one of {sorted(_VALUE_KINDS)}")
        m = {}
        for sl, entry in (spec.get("labels") or {}).items():
            if isinstance(entry, dict):
                ids, kind = entry.get("labels", []), entry.get("value", default_kind)
            else:
                ids, kind = entry, default_kind
            if kind not in _VALUE_KINDS:
                raise RecipeError(f"{path}: sources.{src}.labels.{sl}: bad value kind {kind!r}")
            ids = tuple(str(x) for x in ids)
            check(ids, f"sources.{src}.labels.{sl}")
            m[str(sl)] = (ids, kind)
        sources[str(src)] = m
    return LabelDefs(names, implies, groups, sources, dict(data.get("thresholds") or {}))


@dataclass(frozen=True)
class NeutralEntry:
    label: str  # label of a negated neutral phrase
    phrases: tuple[str, ...]
    qualifiers: dict[str, tuple[str, ...]]  # label -> qualifier phrases


@dataclass(frozen=True)
class RuleSet:
    """Every rule file of a rules folder, parsed."""

    rules_dir: Path
    labels: LabelDefs
    mentions: dict[str, tuple[str, ...]]  # label -> phrases
    unmentions: dict[str, tuple[str, ...]]
    neutral: tuple[NeutralEntry, ...]
    neutral_reach_after: int
    neutral_reach_before: int
    negation: dict[str, tuple[str, ...]]  # preceding / following / pseudo / termination
    uncertainty_preceding: tuple[str, ...]
    uncertainty_following: tuple[str, ...]
    uncertainty_reach: int
    uncertainty_stops: tuple[str, ...] = (",", ";", ":")


def _phrase_dir(rules_dir: Path, sub: str, labels: LabelDefs) -> dict[str, tuple[str, ...]]:
    d = rules_dir / sub
    out: dict[str, tuple[str, ...]] = {}
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.txt")):
        if p.stem not in labels.names:
            raise RecipeError(f"{p}: file name {p.stem!r} is not a label id of labels.yaml")
        out[p.stem] = tuple(read_phrase_file(p))
    return out


def _phrases(value, path: Path, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise RecipeError(f"{path}: {where} must be a list of phrases")
    out: list[str] = []
    for v in value:
        for p in expand_phrase(str(v)):
            if p not in out:
                out.append(p)
    return tuple(out)


def load_rules(rules_dir: str | Path | None = None) -> RuleSet:
    """Parse a rules folder (default :func:`gazeprep.paths.default_rules_dir`)."""
    d = Path(rules_dir) if rules_dir is not None else default_rules_dir()
    if not d.is_dir():
        raise RecipeError(f"rules folder {str(d)!r} not found")
    labels = load_label_defs(d)
    mentions = _phrase_dir(d, "mention", labels)
    if not mentions:
        raise RecipeError(f"{d / 'mention'}: no mention phrase files")
    unmentions = _phrase_dir(d, "unmention", labels)

    npath = d / "neutral.yaml"
    neutral: list[NeutralEntry] = []
    reach_after = reach_before = 0
    if npath.is_file():
        nd = read_yaml(npath)
        reach_after = int(nd.get("reach_after_tokens", 6))
        reach_before = int(nd.get("reach_before_tokens", 3))
        for i, e in enumerate(nd.get("entries") or []):
            lab = str(e.get("label"))
            if lab not in labels.names:
                raise RecipeError(f"{npath}: entries[{i}].label: unknown label id {lab!r}")
            quals = {}
            for ql, qp in (e.get("qualifiers") or {}).items():
                if ql not in labels.names:
                    raise RecipeError(f"{npath}: entries[{i}].qualifiers: unknown label id {ql!r}")
                quals[str(ql)] = _phrases(qp, npath, f"entries[{i}].qualifiers.{ql}")
            neutral.append(NeutralEntry(lab, _phrases(e.get("phrases"), npath, f"entries[{i}].phrases"), quals))

    negation = {}
    for kind in ("preceding", "following", "pseudo", "termination"):
        p = d / "negation" / f"{kind}.txt"
        negation[kind] = tuple(read_phrase_file(p)) if p.is_file() else ()

    upath = d / "uncertainty.yaml"
    ud = read_yaml(upath) if upath.is_file() else {}
    return RuleSet(
        rules_dir=d,
        labels=labels,
        mentions=mentions,
        unmentions=unmentions,
        neutral=tuple(neutral),
        neutral_reach_after=reach_after,
        neutral_reach_before=reach_before,
        negation=negation,
        uncertainty_preceding=_phrases(ud.get("preceding", []), upath, "preceding"),
        uncertainty_following=_phrases(ud.get("following", []), upath, "following"),
        uncertainty_reach=int(ud.get("following_reach_tokens", 4)),
        uncertainty_stops=tuple(str(x) for x in ud.get("following_stops", [",", ";", ":"])),
    )


@dataclass(frozen=True)
class KeywordSets:
    """``rules/<name>.yaml`` for :class:`~gazeprep.recipes.KeywordWindow` (paper 000)."""

    targets: dict[str, tuple[tuple[str, ...], ...]]  # target -> alternatives, each a tuple of terms (all needed)
    count_negated: bool


def load_keyword_sets(name: str = "anatomy_keywords", rules_dir: str | Path | None = None) -> KeywordSets:
    """Parse a keyword-set file; each target maps to a list of term lists."""
    d = Path(rules_dir) if rules_dir is not None else default_rules_dir()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise RecipeError(f"keyword set name {name!r} must be a plain file stem")
    path = d / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"keyword set {str(path)!r} not found")
    data = read_yaml(path)
    targets = {}
    for t, alts in (data.get("targets") or {}).items():
        if not isinstance(alts, list):
            raise RecipeError(f"{path}: targets.{t} must be a list of term lists")
        parsed = []
        for a in alts:
            terms = [a] if isinstance(a, str) else a
            parsed.append(tuple(" ".join(str(x).lower().split()) for x in terms))
        targets[str(t)] = tuple(parsed)
    return KeywordSets(targets, bool(data.get("count_negated", True)))
