"""Labeler profiles: named sets of labeler rules shipped as data (``rules/``, ``rules/profiles/<name>/``).

A rules folder holds the shared label definitions (``labels.yaml``) and the labeler rules of one or
more profiles:

* the **default profile** ``gazeprep`` is the folder itself (``mention/``, ``unmention/``,
  ``negation/``, ``neutral.yaml``, ``uncertainty.yaml``, ``context.yaml``, ``profile.yaml``), so a
  rules folder of the older single-profile layout (``$GAZEPREP_RULES_DIR``) still works unchanged;
* every other profile is a sub-folder ``profiles/<name>/`` with the same layout (``labels.yaml``
  always comes from the rules folder itself). The shipped ``lanfredi2023`` profile reproduces paper
  004's modified CheXpert labeler.

Files a profile may add to the single-profile layout (all optional; without them the labeler behaves
as before profiles existed):

* ``profile.yaml``: ``description``; ``matching``: ``phrases`` (spaCy token phrases of ``mention/``,
  the longest overlapping phrase wins) or ``regex`` (CheXpert's extractor: every regular expression
  of ``mention_regex/<label>.txt`` is searched with :func:`re.finditer` in the lower-cased sentence,
  every match is a mention, a match overlapping a match of ``unmention_regex/<label>.txt`` is
  dropped; ``<label>}1.txt``, ``<label>}2.txt``, ... are parts whose line-by-line concatenations
  are expressions); ``cleaning``: ``none`` or ``chexpert`` (regex profiles: the report is cleaned
  and split into sentences as paper 004's labeler does, :mod:`gazeprep.text.chexpert_text`;
  offsets still point into the original text); ``aggregation``: ``strongest`` (a report's status
  is its strongest mention status) or ``chexpert`` (CheXpert's ``dict_to_vec`` order of tests and
  its chf / heart failure exception); ``scope``: ``breaks_preceding`` / ``breaks_following`` (phrases that end the scope of a
  preceding / following trigger, as a termination phrase does for both) and ``clause_final_next``
  (tokens that may follow a ``clause_final`` trigger).
* ``context.yaml``: ``rules``, a list of context rules (ConText-style): ``category`` (``negated``,
  ``uncertain``, ``uncertain_first`` (an uncertainty that wins over negation, CheXpert's
  pre-negation uncertainty), ``hypothetical`` or ``cancel`` (the mention is dropped)),
  ``direction`` (``preceding``: the mentions after the trigger in its scope; ``following``: the
  mentions before it in its scope; ``overlap``: mentions whose span overlaps the trigger),
  ``phrases``, and optionally ``labels`` (the rule applies to mentions of these labels only),
  ``reach_tokens`` (a shorter scope), ``clause_final`` (a following trigger counts only at the
  end of its clause: "heart size normal." but not "normal caliber vessels") and ``mentions`` (a
  regular expression the mention's lower-cased text must contain: 004's rules that name the
  finding's own word, "stable heart size" but not "stable cardiomegaly"). Category ``unnegated``:
  no negation applies to a mention it covers (NegBio skips a negation of a node modified by "new").
  ``scope.list_commas``: a comma followed, before the next comma, by "and" / "or" (a list "A, B
  and C are normal") does not end a following trigger's scope, as NegBio spreads a rule over the
  conjuncts of its node.

:func:`profile_hash` is a SHA-256 over ``labels.yaml`` and the profile's rule files (paths relative
to the profile folder, and bytes), recorded in export manifests.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from gazeprep.errors import RecipeError
from gazeprep.paths import default_rules_dir

# The folder layout of profiles lives in gazeprep.text.rules (load_rules needs it); re-exported here.
from gazeprep.text.rules import (  # noqa: F401 - re-exported
    DEFAULT_PROFILE,
    PROFILES_SUBDIR,
    _phrases,
    list_profiles,
    load_label_defs,
    profile_dir,
    read_yaml,
    resolve_profile,
)

_RULE_FILES = ("profile.yaml", "context.yaml", "neutral.yaml", "uncertainty.yaml")
_RULE_DIRS = ("mention", "unmention", "negation", "mention_regex", "unmention_regex")
CATEGORIES = ("negated", "uncertain", "uncertain_first", "hypothetical", "cancel", "unnegated")
DIRECTIONS = ("preceding", "following", "overlap")
#: Most regular expressions in one ``*_regex/<label>.txt`` file.
MAX_REGEX_PER_FILE = 2000
#: Longest regular expression (characters) of a regex rule file.
MAX_REGEX_CHARS = 400


def profile_files(profile: str | None = None, rules_dir: str | Path | None = None) -> list[Path]:
    """``labels.yaml`` and every rule file of the profile, in a fixed order."""
    root = default_rules_dir(rules_dir)
    d = profile_dir(profile, root)
    files = [root / "labels.yaml"] if (root / "labels.yaml").is_file() else []
    for name in _RULE_FILES:
        if (d / name).is_file():
            files.append(d / name)
    for sub in _RULE_DIRS:
        if (d / sub).is_dir():
            files += sorted(p for p in (d / sub).glob("*.txt") if p.is_file())
    return files


def profile_hash(profile: str | None = None, rules_dir: str | Path | None = None) -> str:
    """SHA-256 (hex) of the profile's rule files: each file's path relative to the rules folder and
    its bytes, so that any edit of a rule changes it."""
    root = default_rules_dir(rules_dir).resolve()
    h = hashlib.sha256()
    for f in profile_files(profile, root):
        try:
            rel = f.resolve().relative_to(root).as_posix()
            data = f.read_bytes()
        except OSError as exc:
            raise RecipeError(f"{f}: cannot read rule file: {exc}") from None
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


@dataclass(frozen=True)
class ContextRule:
    """One context rule of ``context.yaml`` (see the module docstring)."""

    category: str
    direction: str
    phrases: tuple[str, ...]
    labels: frozenset[str] | None = None
    reach_tokens: int | None = None
    clause_final: bool = False
    mentions: str | None = None  # a regular expression the mention's lower-cased text must contain


@dataclass(frozen=True)
class ProfileSpec:
    """The parts of a profile beyond :class:`gazeprep.text.rules.RuleSet`."""

    name: str
    dir: Path
    description: str = ""
    matching: str = "phrases"  # or "regex"
    breaks_preceding: tuple[str, ...] = ()
    breaks_following: tuple[str, ...] = ()
    clause_final_next: tuple[str, ...] = ("and", "or", ",", ";", ":", ".")
    list_commas: bool = False  # a comma before "and"/"or" of a list does not end a following scope
    context: tuple[ContextRule, ...] = ()
    cleaning: str = "none"  # or "chexpert": gazeprep.text.chexpert_text.clean_report before matching
    aggregation: str = "strongest"  # or "chexpert": CheXpert's dict_to_vec order and chf exception
    mention_regex: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unmention_regex: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hash: str = ""


def read_regex_file(path: Path, *, validate: bool = True) -> tuple[str, ...]:
    """Regular expressions of one regex rule file: one per line, used as written (CheXpert's phrase
    files, where ``_`` stands for a space); blank lines and lines starting with ``#`` are skipped.

    Raises :class:`RecipeError` naming the file and 1-based line for an invalid or over-long
    expression, or more than :data:`MAX_REGEX_PER_FILE` expressions.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read rule file: {exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    out: dict[str, None] = {}
    for i, line in enumerate(text.splitlines(), start=1):
        raw = line.strip()
        if not raw or raw.startswith("#"):
            continue
        expr = raw.replace("_", " ")
        if len(expr) > MAX_REGEX_CHARS:
            raise RecipeError(f"{path}, line {i}: expression longer than {MAX_REGEX_CHARS} characters")
        if validate:  # parts of a <label>}N.txt file are checked once combined
            try:
                re.compile(expr)
            except re.error as exc:
                raise RecipeError(f"{path}, line {i}: not a valid regular expression: {exc}") from None
        out[expr] = None
        if len(out) > MAX_REGEX_PER_FILE:
            raise RecipeError(f"{path}: more than {MAX_REGEX_PER_FILE} expressions")
    return tuple(out)


def _regex_dir(d: Path, labels: set[str]) -> dict[str, tuple[str, ...]]:
    """Regex rule files of a folder per label. ``<label>.txt`` holds whole expressions; files
    ``<label>}1.txt``, ``<label>}2.txt``, ... (004's unmention layout) are parts, and every
    concatenation of one line of each part, in part order, is an expression (``itertools.product``:
    "over the" + " left " + "heart"); they follow the label's whole expressions."""
    out: dict[str, tuple[str, ...]] = {}
    if not d.is_dir():
        return out
    parts: dict[str, dict[int, tuple[str, ...]]] = {}
    for p in sorted(d.glob("*.txt")):
        stem, sep, num = p.stem.partition("}")
        if stem not in labels:
            raise RecipeError(f"{p}: file name {stem!r} is not a label id of labels.yaml")
        if sep:
            if not num.isdigit() or int(num) < 1:
                raise RecipeError(f"{p}: a part file is named <label>}}<number from 1>.txt")
            parts.setdefault(stem, {})[int(num)] = read_regex_file(p, validate=False)
        else:
            out[stem] = read_regex_file(p)
    for stem, by_num in parts.items():
        nums = sorted(by_num)
        if nums != list(range(1, len(nums) + 1)):
            raise RecipeError(f"{d}: the part files of {stem!r} are not numbered 1..{len(nums)}")
        combos = 1
        for k in nums:
            combos *= len(by_num[k])
        if combos > MAX_REGEX_PER_FILE:
            raise RecipeError(f"{d}: the part files of {stem!r} make more than {MAX_REGEX_PER_FILE} expressions")
        exprs = dict.fromkeys(out.get(stem, ()))
        for combo in itertools.product(*(by_num[k] for k in nums)):
            expr = "".join(combo)
            where = f"{d / (stem + '}N.txt')}"
            if len(expr) > MAX_REGEX_CHARS:
                raise RecipeError(f"{where}: combined expression longer than {MAX_REGEX_CHARS} characters")
            try:
                re.compile(expr)
            except re.error as exc:
                raise RecipeError(f"{where}: combined expression {expr!r} is not valid: {exc}") from None
            exprs[expr] = None
        out[stem] = tuple(exprs)
    return out


_CONTEXT_KEYS = frozenset(
    {"category", "direction", "phrases", "labels", "reach_tokens", "clause_final", "mentions", "why"}
)


def _read_profile_meta(ppath: Path) -> tuple[dict, str, str, str, dict]:
    """``profile.yaml`` (an empty mapping when the profile has none) with its checked ``matching``,
    ``cleaning``, ``aggregation`` and ``scope`` settings."""
    meta: dict = read_yaml(ppath) if ppath.is_file() else {}
    matching = str(meta.get("matching", "phrases"))
    if matching not in ("phrases", "regex"):
        raise RecipeError(f"{ppath}: matching must be 'phrases' or 'regex', not {matching!r}")
    cleaning = str(meta.get("cleaning", "none"))
    if cleaning not in ("none", "chexpert"):
        raise RecipeError(f"{ppath}: cleaning must be 'none' or 'chexpert', not {cleaning!r}")
    aggregation = str(meta.get("aggregation", "strongest"))
    if aggregation not in ("strongest", "chexpert"):
        raise RecipeError(f"{ppath}: aggregation must be 'strongest' or 'chexpert', not {aggregation!r}")
    if cleaning == "chexpert" and matching != "regex":
        raise RecipeError(f"{ppath}: cleaning 'chexpert' needs matching 'regex'")
    scope = meta.get("scope") or {}
    if not isinstance(scope, dict):
        raise RecipeError(f"{ppath}: scope must be a mapping")
    return meta, matching, cleaning, aggregation, scope


def _context_rule(r: object, i: int, cpath: Path, labels: set[str]) -> ContextRule:
    """Rule ``i`` of ``context.yaml``, checked (see the module docstring for its keys)."""
    where = f"{cpath}: rules[{i}]"
    if not isinstance(r, dict):
        raise RecipeError(f"{where} must be a mapping")
    unknown = set(r) - _CONTEXT_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)}")
    cat, direction = r.get("category"), r.get("direction")
    if cat not in CATEGORIES:
        raise RecipeError(f"{where}.category must be one of {list(CATEGORIES)}, not {cat!r}")
    if direction not in DIRECTIONS:
        raise RecipeError(f"{where}.direction must be one of {list(DIRECTIONS)}, not {direction!r}")
    labs = r.get("labels")
    if labs is not None:
        labs = frozenset(str(x) for x in labs)
        bad = sorted(labs - labels)
        if bad:
            raise RecipeError(f"{where}.labels: unknown label id(s) {bad}")
    reach = r.get("reach_tokens")
    if reach is not None and (not isinstance(reach, int) or isinstance(reach, bool) or reach < 0):
        raise RecipeError(f"{where}.reach_tokens must be a non-negative integer")
    mrx = r.get("mentions")
    if mrx is not None:
        mrx = str(mrx)
        try:
            re.compile(mrx)
        except re.error as exc:
            raise RecipeError(f"{where}.mentions: not a valid regular expression: {exc}") from None
    phrases = _phrases(r.get("phrases"), cpath, f"rules[{i}].phrases")
    return ContextRule(cat, direction, phrases, labs, reach, bool(r.get("clause_final", False)), mrx)


def _read_context_rules(cpath: Path, labels: set[str]) -> tuple[ContextRule, ...]:
    """The checked rules of ``context.yaml`` (none when the profile has no such file)."""
    if not cpath.is_file():
        return ()
    raw = read_yaml(cpath).get("rules") or []
    if not isinstance(raw, list):
        raise RecipeError(f"{cpath}: rules must be a list")
    return tuple(_context_rule(r, i, cpath, labels) for i, r in enumerate(raw))


def load_profile_spec(profile: str | None = None, rules_dir: str | Path | None = None) -> ProfileSpec:
    """Parse ``profile.yaml``, ``context.yaml`` and the regex rule files of a profile.

    Raises :class:`RecipeError` naming the file (and rule) for an unknown setting, a malformed
    context rule, a label id not in ``labels.yaml`` or a ``regex`` profile without mention files."""
    name = resolve_profile(profile)
    root = default_rules_dir(rules_dir)
    d = profile_dir(name, root)
    labels = set(load_label_defs(root).names)
    ppath = d / "profile.yaml"
    meta, matching, cleaning, aggregation, scope = _read_profile_meta(ppath)

    def plist(key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        v = scope.get(key)
        return default if v is None else _phrases(v, ppath, f"scope.{key}")

    context = _read_context_rules(d / "context.yaml", labels)
    spec = ProfileSpec(
        name=name,
        dir=d,
        description=str(meta.get("description", "")),
        matching=matching,
        cleaning=cleaning,
        aggregation=aggregation,
        breaks_preceding=plist("breaks_preceding"),
        breaks_following=plist("breaks_following"),
        clause_final_next=plist("clause_final_next", ProfileSpec.clause_final_next),
        list_commas=bool(scope.get("list_commas", False)),
        context=context,
        mention_regex=_regex_dir(d / "mention_regex", labels),
        unmention_regex=_regex_dir(d / "unmention_regex", labels),
        hash=profile_hash(name, root),
    )
    if matching == "regex" and not spec.mention_regex:
        raise RecipeError(f"{d / 'mention_regex'}: matching 'regex' needs regex mention files")
    return spec
