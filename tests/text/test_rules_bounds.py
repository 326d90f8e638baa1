"""Phrase expansion in rule files is bounded (count, length, brace depth, phrases per file), checked
before expanding, and every violation names the rule file and its 1-based line (issue 11.5)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gazeprep.errors import RecipeError
from gazeprep.paths import default_rules_dir
from gazeprep.text.rules import (
    MAX_PHRASE_CHARS,
    MAX_PHRASE_VARIANTS,
    MAX_PHRASES_PER_FILE,
    expand_phrase,
    load_rules,
    read_phrase_file,
    read_yaml,
)


@pytest.fixture()
def rules_copy(tmp_path) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d)
    return d


def _append(path: Path, lines: list[str]) -> int:
    """Append lines to a phrase file; return the 1-based line number of the first one."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text += "\n"
    first = len(text.splitlines()) + 1
    path.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")
    return first


def test_expansion_known_answers():
    # 2 x 3 combinations; the empty alternative drops the slot; duplicates removed in order
    assert expand_phrase("{left |right }{pleural |}effusion{|s}") == [
        "left pleural effusion",
        "left pleural effusions",
        "left effusion",
        "left effusions",
        "right pleural effusion",
        "right pleural effusions",
        "right effusion",
        "right effusions",
    ]
    assert expand_phrase("Ground-glass") == ["ground-glass", "ground glass", "groundglass"]
    assert expand_phrase("{a|a|A}") == ["a"]


def test_count_bound_is_checked_before_expanding():
    at_limit = "{a|b}" * 8  # 2**8 = 256 combinations: allowed
    assert len(expand_phrase(at_limit)) == MAX_PHRASE_VARIANTS == 256
    t0 = time.perf_counter()
    with pytest.raises(RecipeError) as exc:
        expand_phrase("{a|b}" * 24, source="x.txt", line_no=7)  # 16.7 M combinations
    assert time.perf_counter() - t0 < 0.1
    msg = str(exc.value)
    assert msg.startswith("x.txt, line 7: ") and "24 {a|b} groups" in msg and "256" in msg
    with pytest.raises(RecipeError, match="more than 256"):
        expand_phrase("{a|b}" * 8 + "{c|d|e}")  # 768


def test_length_bound():
    assert len(expand_phrase("x" * MAX_PHRASE_CHARS)[0]) == 200
    with pytest.raises(RecipeError, match=r"f\.txt, line 2: .*201 characters"):
        expand_phrase("x" * 201, source="f.txt", line_no=2)
    # the longest alternative of each group counts: 100 + 101 > 200
    with pytest.raises(RecipeError, match="201 characters"):
        expand_phrase("x" * 100 + "{a|" + "y" * 101 + "}", source="f.txt", line_no=2)


@pytest.mark.parametrize(
    "line, needle",
    [
        ("{a{b|c}}", "nested braces"),
        ("{a|b", "not closed"),
        ("a|b}", "without an opening"),
        ("}{", "without an opening"),
    ],
)
def test_brace_depth_and_balance(line, needle):
    with pytest.raises(RecipeError) as exc:
        expand_phrase(line, source="f.txt", line_no=4)
    assert str(exc.value).startswith("f.txt, line 4: ") and needle in str(exc.value)


def test_phrase_file_bomb_names_file_and_line_and_fails_fast(rules_copy):
    path = rules_copy / "mention" / "pneumothorax.txt"
    line = _append(path, ["# a bomb follows", "{a|b}" * 24])
    t0 = time.perf_counter()
    with pytest.raises(RecipeError) as exc:
        load_rules(rules_copy)
    assert time.perf_counter() - t0 < 1.0
    assert str(exc.value).startswith(f"{path}, line {line + 1}: ")


def test_too_many_phrases_per_file(tmp_path):
    p = tmp_path / "many.txt"
    # 40 lines of 256 distinct phrases each = 10240 > 10000; the error names the line that crosses
    p.write_text("\n".join(f"w{i} " + "{a|b}" * 8 for i in range(40)) + "\n", encoding="utf-8")
    with pytest.raises(RecipeError) as exc:
        read_phrase_file(p)
    assert str(exc.value).startswith(f"{p}, line 40: ") and str(MAX_PHRASES_PER_FILE) in str(exc.value)
    p.write_text("\n".join(f"w{i} " + "{a|b}" * 8 for i in range(39)) + "\n", encoding="utf-8")
    assert len(read_phrase_file(p)) == 39 * 256  # 9984: under the bound


def test_yaml_phrase_lists_name_the_item_line(rules_copy):
    upath = rules_copy / "uncertainty.yaml"
    data = read_yaml(upath)
    assert isinstance(data["preceding"], list)
    text = upath.read_text(encoding="utf-8")
    bad = "{x|y}" * 20
    # put a bomb as the first item of `preceding`: find that item's line in the file
    lines = text.splitlines()
    first_item = data["preceding"].item_lines[0]
    indent = lines[first_item - 1][: len(lines[first_item - 1]) - len(lines[first_item - 1].lstrip())]
    lines.insert(first_item - 1, f"{indent}- '{bad}'")
    upath.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RecipeError) as exc:
        load_rules(rules_copy)
    msg = str(exc.value)
    assert str(upath) in msg and f"line {first_item}: " in msg and "preceding[0]" in msg


def test_yaml_loader_stays_safe(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("a: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        read_yaml(p)
    p.write_text("a: [1, 'b', {c: d}]\nn: 3\n", encoding="utf-8")
    d = read_yaml(p)
    assert d == {"a": [1, "b", {"c": "d"}], "n": 3} and d["a"].item_lines == [1, 1, 1]


def test_label_reports_with_a_bomb_exits_fast_with_one_line(rules_copy, tmp_path):
    path = rules_copy / "negation" / "preceding.txt"
    line = _append(path, ["{a|b}" * 24])
    src = tmp_path / "r.csv"
    src.write_text("id,text\nr1,No pneumothorax.\n", encoding="utf-8")
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "gazeprep",
            "label-reports",
            str(src),
            "--id-column",
            "id",
            "--text-column",
            "text",
            "--out",
            str(tmp_path / "m.parquet"),
            "--rules",
            str(rules_copy),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in res.stderr
    assert f"{path}, line {line}: " in err[0]
    assert elapsed < 60  # process start + imports; the check itself is instant (see above)
