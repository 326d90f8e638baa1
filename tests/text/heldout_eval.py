"""Precision / recall of the labeler on the hand-labelled held-out sentences.

Run ``python tests/text/heldout_eval.py`` to print the table. Truth and prediction are both expanded
with the label implications of rules/labels.yaml; a sentence's status per label is the strongest over
its mentions (positive > uncertain > negative).

Two scores per label:
* ``status``: a (sentence, label, status) triple counts as a true positive when the predicted
  status equals the hand label (negated mentions count too);
* ``present``: (sentence, label) with status positive or uncertain, i.e. what the 004 windows use.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gazeprep.text import Labeler, implied_labels, report_status

HELDOUT = Path(__file__).with_name("heldout_sentences.yaml")
_ORDER = ("positive", "uncertain", "negative")


def _expand(labels: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for lab, st in labels.items():
        for x in implied_labels(lab):
            if x not in out or _ORDER.index(st) < _ORDER.index(out[x]):
                out[x] = st
    return out


def _prf(tp, npred, ntrue):
    p = tp / npred if npred else float("nan")
    r = tp / ntrue if ntrue else float("nan")
    f = 2 * tp / (npred + ntrue) if (npred + ntrue) else float("nan")
    return p, r, f


def evaluate(labeler: Labeler | None = None) -> dict:
    """Scores on the held-out set: {'n_sentences', 'status': {...}, 'present': {...}, 'errors': [...]}.

    Each score dict has 'micro' (P, R, F1) and 'per_label' {label: (P, R, F1, n_true)}.
    """
    items = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))
    lab = labeler or Labeler.from_rules()
    preds = lab.label_texts([it["text"] for it in items])
    truth_s, pred_s, truth_p, pred_p = set(), set(), set(), set()
    errors = []
    for i, (it, ms) in enumerate(zip(items, preds)):
        t = _expand(it["labels"] or {})
        p = report_status(ms)
        truth_s |= {(i, k, v) for k, v in t.items()}
        pred_s |= {(i, k, v) for k, v in p.items()}
        truth_p |= {(i, k) for k, v in t.items() if v != "negative"}
        pred_p |= {(i, k) for k, v in p.items() if v != "negative"}
        if t != p:
            errors.append((it["text"], t, p))
    out = {"n_sentences": len(items), "errors": errors}
    for name, T, P in (("status", truth_s, pred_s), ("present", truth_p, pred_p)):
        per = {}
        for lab_id in sorted({x[1] for x in T | P}):
            Tl = {x for x in T if x[1] == lab_id}
            Pl = {x for x in P if x[1] == lab_id}
            per[lab_id] = (*_prf(len(Tl & Pl), len(Pl), len(Tl)), len(Tl))
        out[name] = {"micro": _prf(len(T & P), len(P), len(T)), "per_label": per}
    return out


def format_table(res: dict) -> str:
    lines = [f"held-out sentences: {res['n_sentences']}"]
    for name in ("status", "present"):
        mp, mr, mf = res[name]["micro"]
        lines.append(f"[{name}] micro P={mp:.3f} R={mr:.3f} F1={mf:.3f}")
        lines.append(f"  {'label':32s} {'P':>6s} {'R':>6s} {'F1':>6s} {'n':>4s}")
        for lab_id, (p, r, f, n) in res[name]["per_label"].items():
            lines.append(f"  {lab_id:32s} {p:6.3f} {r:6.3f} {f:6.3f} {n:4d}")
    return "\n".join(lines)


if __name__ == "__main__":
    res = evaluate()
    print(format_table(res))
    print(f"\nsentences with any difference: {len(res['errors'])}")
    for text, t, p in res["errors"]:
        print(f"- {text}\n    truth {t}\n    pred  {p}")
