"""Held-out labeler quality (tests/text/heldout_sentences.yaml, never used to tune rules)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("heldout_eval", Path(__file__).with_name("heldout_eval.py"))
heldout_eval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(heldout_eval)


def test_heldout_precision_recall(capsys):
    res = heldout_eval.evaluate()
    assert res["n_sentences"] >= 150
    with capsys.disabled():
        print("\n" + heldout_eval.format_table(res))
    assert res["status"]["micro"][2] >= 0.85
    assert res["present"]["micro"][2] >= 0.85


def test_scorer_detects_errors():
    """The scorer is not vacuous: a labeler that returns nothing scores zero recall."""

    class Empty:
        def label_texts(self, texts):
            return [[] for _ in texts]

    res = heldout_eval.evaluate(Empty())
    assert res["status"]["micro"][1] == 0.0
