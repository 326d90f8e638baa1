"""Loading the labeler's rule data (``rules/``): phrase files, YAML files, label definitions.

Everything here is data parsing only; no matching. Phrase files hold one phrase per line, ``#``
comments, and ``{a|b|}`` alternatives (an empty alternative drops the slot), e.g.
``{left |right |}pleural effusion{|s}``. See ``rules/README.md``.

Phrase expansion is bounded, and every bound is checked from the line's text *before* anything is
expanded, so that a hostile or mistyped rule file fails at once instead of running for ever:

* at most :data:`MAX_PHRASE_VARIANTS` (256) combinations per line (the product of the numbers of
  alternatives of its groups; a hyphenated phrase then adds its spaced and joined forms);
* at most :data:`MAX_PHRASE_CHARS` (200) characters in the longest expansion (literal text plus the
  longest alternative of each group, before whitespace is collapsed);
* braces are not nested (depth at most 1) and every ``{`` is closed on its line;
* at most :data:`MAX_PHRASES_PER_FILE` (10000) distinct phrases per phrase file or YAML phrase list.

A violation is a :class:`~gazeprep.errors.RecipeError` naming the file and the 1-based line
(``rules/mention/x.txt, line 3: ...``); in YAML files the line is that of the list item (the files
are still read with ``yaml.SafeLoader``, whose sequences here also remember their items' lines).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gazeprep.errors import RecipeError
from gazeprep.paths import default_rules_dir

# --- the folder layout of labeler profiles (see gazeprep.text.profiles) ---------------------------

#: The profile used when none is named: the rules folder itself.
DEFAULT_PROFILE = "gazeprep"
#: Sub-folder of a rules folder holding the other profiles.
PROFILES_SUBDIR = "profiles"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


def list_profiles(rules_dir: str | Path | None = None) -> tuple[str, ...]:
    """Names of the profiles of a rules folder (default :func:`gazeprep.paths.default_rules_dir`):
    ``gazeprep`` first, then the sub-folders of ``profiles/`` in name order."""
    root = default_rules_dir(rules_dir)
    sub = root / PROFILES_SUBDIR
    names = [DEFAULT_PROFILE]
    if sub.is_dir():
        names += sorted(
            p.name for p in sub.iterdir() if p.is_dir() and _NAME.match(p.name) and p.name != DEFAULT_PROFILE
        )
    return tuple(names)


def resolve_profile(profile: str | None) -> str:
    """``profile``, or :data:`DEFAULT_PROFILE` when ``None`` / empty."""
    return DEFAULT_PROFILE if profile is None or str(profile).strip() == "" else str(profile).strip()


def profile_dir(profile: str | None = None, rules_dir: str | Path | None = None) -> Path:
    """The folder of a profile's labeler rules.

    Raises
    ------
    RecipeError
        One line naming the unknown profile and the known ones.
    """
    name = resolve_profile(profile)
    root = default_rules_dir(rules_dir)
    if name == DEFAULT_PROFILE:
        return root
    d = root / PROFILES_SUBDIR / name
    if not _NAME.match(name) or not d.is_dir():
        known = ", ".join(list_profiles(root))
        raise RecipeError(f"unknown labeler profile {name!r} (known: {known})")
    return d


#: Most combinations of alternatives one phrase line may describe.
MAX_PHRASE_VARIANTS = 256
#: Longest phrase (characters) one line may expand to.
MAX_PHRASE_CHARS = 200
#: Most distinct phrases in one phrase file (or one YAML phrase list).
MAX_PHRASES_PER_FILE = 10_000

_BRACES = re.compile(r"\{([^{}]*)\}")


def _where(source: str | Path | None, line_no: int | None) -> str:
    if source is None:
        return "phrase" if line_no is None else f"line {line_no}"
    return f"{source}" if line_no is None else f"{source}, line {line_no}"


def _check_braces(line: str, where: str) -> None:
    depth = 0
    for ch in line:
        if ch == "{":
            depth += 1
            if depth > 1:
                raise RecipeError(f"{where}: nested braces are not supported ({{a|b}} groups only): {line[:80]!r}")
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise RecipeError(f"{where}: '}}' without an opening '{{': {line[:80]!r}")
    if depth:
        raise RecipeError(f"{where}: '{{' is not closed on its line: {line[:80]!r}")


def expand_phrase(line: str, *, source: str | Path | None = None, line_no: int | None = None) -> list[str]:
    """All phrases described by one phrase-file line (``{a|b|}`` alternatives, whitespace collapsed).

    Hyphenated phrases also yield their spaced and joined forms ("ground-glass" -> "ground glass",
    "groundglass"), since dictation writes all three. The result is lower case, in expansion order,
    without duplicates.

    Parameters
    ----------
    line:
        One phrase (comments already removed).
    source, line_no:
        The rule file and 1-based line, used in error messages.

    Raises
    ------
    RecipeError
        Unbalanced or nested braces, more than :data:`MAX_PHRASE_VARIANTS` combinations or an
        expansion longer than :data:`MAX_PHRASE_CHARS` characters (checked before expanding).
    """
    where = _where(source, line_no)
    _check_braces(line, where)
    parts = _BRACES.split(line)
    # even indices: literal text, odd indices: alternatives
    choices = [[p] if i % 2 == 0 else p.split("|") for i, p in enumerate(parts)]
    n_combos = 1
    for c in choices:  # stop counting once over the bound (a huge line would make a huge integer)
        n_combos *= len(c)
        if n_combos > MAX_PHRASE_VARIANTS:
            n_groups = len(choices) // 2
            raise RecipeError(
                f"{where}: the phrase's {n_groups} {{a|b}} groups give more than {MAX_PHRASE_VARIANTS} "
                f"combinations (gazeprep.text.rules.MAX_PHRASE_VARIANTS); split it into several lines"
            )
    longest = sum(max(len(a) for a in c) for c in choices)
    if longest > MAX_PHRASE_CHARS:
        raise RecipeError(
            f"{where}: the phrase expands to up to {longest} characters, more than {MAX_PHRASE_CHARS} "
            f"(gazeprep.text.rules.MAX_PHRASE_CHARS)"
        )
    out: dict[str, None] = {}  # insertion-ordered set
    for combo in itertools.product(*choices):
        phrase = " ".join("".join(combo).split()).lower()
        if not phrase:
            continue
        out[phrase] = None
        if "-" in phrase and phrase != "-":
            for v in (" ".join(phrase.replace("-", " ").split()), phrase.replace("-", "")):
                if v:
                    out[v] = None
    return list(out)


def _add_phrases(out: dict[str, None], phrases: list[str], where: str) -> None:
    for p in phrases:
        out[p] = None
    if len(out) > MAX_PHRASES_PER_FILE:
        raise RecipeError(
            f"{where}: more than {MAX_PHRASES_PER_FILE} distinct phrases (gazeprep.text.rules.MAX_PHRASES_PER_FILE)"
        )


def read_phrase_file(path: Path) -> list[str]:
    """Phrases of one phrase file, expanded, in file order without duplicates.

    Raises :class:`RecipeError` naming the file and 1-based line for a phrase over a bound (see the
    module docstring) or an unreadable file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read rule file: {exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    out: dict[str, None] = {}
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        _add_phrases(out, expand_phrase(line, source=path, line_no=i), _where(path, i))
    return list(out)


class _LineList(list):
    """A YAML sequence that remembers the 1-based line of each item (``item_lines``)."""

    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (same tags, same safety) whose sequences are :class:`_LineList`."""


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> Iterator[_LineList]:
    """Two-step construction (as PyYAML's own): the list first, its items once it is referenced."""
    data = _LineList()
    data.item_lines = [n.start_mark.line + 1 for n in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def read_yaml(path: Path) -> dict:
    """A rule YAML file (safe loading: ``yaml.SafeLoader``), which must be a mapping.

    Lists in the result remember the 1-based line of each item (``item_lines``) for error messages.
    """
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read rule file: {exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a rule file must be a mapping")
    return data


@dataclass(frozen=True)
class LabelDefs:
    """``rules/labels.yaml``: canonical ids, implications, groups, source maps, thresholds, and the
    other spellings of a label (``aliases``: e.g. paper 004's ``Cardiomegaly`` for
    ``enlarged_cardiac_silhouette``; see :func:`gazeprep.text.labels.canonical_label`)."""

    names: dict[str, str]
    implies: dict[str, tuple[str, ...]]  # direct implications
    groups: dict[str, tuple[str, ...]]
    # source -> source_label -> (labels, value kind)
    sources: dict[str, dict[str, tuple[tuple[str, ...], str]]]
    thresholds: dict[str, float | bool] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label id -> other names

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
    aliases: dict[str, tuple[str, ...]] = {}
    for lid, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise RecipeError(f"{path}: labels.{lid} must be a mapping")
        names[str(lid)] = str(spec.get("name", lid))
        implies[str(lid)] = tuple(str(x) for x in spec.get("implies", []) or [])
        al = spec.get("aliases", []) or []
        if not isinstance(al, list) or not all(isinstance(x, str) and x.strip() for x in al):
            raise RecipeError(f"{path}: labels.{lid}.aliases must be a list of names")
        if al:
            aliases[str(lid)] = tuple(al)

    def check(ids: Iterable[str], where: str) -> None:
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
    return LabelDefs(names, implies, groups, sources, dict(data.get("thresholds") or {}), aliases)


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


def _phrases(value: object, path: Path, where: str) -> tuple[str, ...]:
    """Expanded phrases of a YAML list ``value`` (found at ``where`` in ``path``); errors name the
    item's line."""
    if not isinstance(value, list):
        raise RecipeError(f"{path}: {where} must be a list of phrases")
    lines = getattr(value, "item_lines", None) or [None] * len(value)
    out: dict[str, None] = {}
    for i, (v, line_no) in enumerate(zip(value, lines)):
        src = f"{path} ({where}[{i}])"
        _add_phrases(out, expand_phrase(str(v), source=src, line_no=line_no), _where(src, line_no))
    return tuple(out)


def load_rules(rules_dir: str | Path | None = None, profile: str | None = None) -> RuleSet:
    """Parse a rules folder (default :func:`gazeprep.paths.default_rules_dir`): ``labels.yaml`` of
    the folder and the labeler rules of ``profile`` (default ``gazeprep``: the folder itself; see
    :mod:`gazeprep.text.profiles`). ``RuleSet.rules_dir`` is the profile's folder."""
    root = Path(rules_dir) if rules_dir is not None else default_rules_dir()
    if not root.is_dir():
        raise RecipeError(f"rules folder {str(root)!r} not found")
    labels = load_label_defs(root)
    d = profile_dir(profile, root)
    mentions = _phrase_dir(d, "mention", labels)
    if not mentions and not (d / "mention_regex").is_dir():
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
