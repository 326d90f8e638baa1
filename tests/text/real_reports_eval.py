"""Labeler precision / recall on real chest X-ray reports with human labels (Open-i / Indiana University).

No public labelled report text whose licence lets this repository carry it was found offline:

* the Indiana University chest X-ray collection (Open-i; Demner-Fushman et al., JAMIA 2016) has real
  reports with manually coded MeSH findings, but its licence (CC BY-NC-ND 4.0: non-commercial, no
  derivatives) does not allow shipping a split of it inside this project, so it stays outside;
* MIMIC-CXR and REFLACX reports need credentialed access (PhysioNet);
* the CheXpert labeler's ``labeled_reports.csv`` (MIT) holds four reports labelled by the labeler
  itself, not by people.

So this module evaluates a copy of ``indiana_reports.csv`` (columns ``uid, MeSH, findings,
impression``) that the user points to with ``GAZEPREP_IU_REPORTS``. The split was fixed before any
rule was touched: a report whose ``sha256(uid)`` starts with an even byte is development (rules were
tuned on it only), odd is the held-out test set. Run ``python tests/text/real_reports_eval.py
[dev|test] [PROFILE]`` to print the table.

Truth per report (findings + impression): a label is present when a MeSH heading codes it
(Cardiomegaly or "Cardiac Shadow/enlarged" -> enlarged_cardiac_silhouette; Pleural Effusion;
Pneumothorax; Pulmonary Atelectasis; Pulmonary Edema; Consolidation; Hernia, Hiatal; "Fractures,
Bone" not qualified healed / chronic -> fracture, the acute label). Prediction: the report status is
positive or uncertain (what the label-specific maps use). MeSH codes what the reader saw, not hedged
differentials, so uncertain mentions count against precision here; read the numbers with that in mind.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import polars as pl

ENV = "GAZEPREP_IU_REPORTS"
LABELS = (
    "enlarged_cardiac_silhouette",
    "pleural_effusion",
    "pneumothorax",
    "atelectasis",
    "edema",
    "consolidation",
    "fracture",
    "hiatal_hernia",
)
_HEADINGS = {
    "Cardiomegaly": "enlarged_cardiac_silhouette",
    "Pleural Effusion": "pleural_effusion",
    "Pneumothorax": "pneumothorax",
    "Pulmonary Atelectasis": "atelectasis",
    "Pulmonary Edema": "edema",
    "Consolidation": "consolidation",
    "Hernia, Hiatal": "hiatal_hernia",
}


def part(uid: str) -> str:
    """``dev`` or ``test``: the fixed split (even / odd first byte of SHA-256 of the uid)."""
    return "dev" if hashlib.sha256(uid.encode()).digest()[0] % 2 == 0 else "test"


def truth(mesh: str | None) -> set[str]:
    """Labels coded by one report's MeSH field (terms separated by ``;``, qualifiers by ``/``)."""
    out: set[str] = set()
    for term in (mesh or "").split(";"):
        parts = [x.strip() for x in term.split("/")]
        head, quals = parts[0], set(parts[1:])
        if head in _HEADINGS:
            out.add(_HEADINGS[head])
        if head in ("Cardiac Shadow", "Heart") and "enlarged" in quals:
            out.add("enlarged_cardiac_silhouette")
        if head == "Fractures, Bone" and not quals & {"healed", "chronic"}:
            out.add("fracture")
    return out


def evaluate(csv_path: str | Path, which: str = "test", labeler=None) -> dict:
    """Per-label (precision, recall, F1, n_true) and macro F1 over :data:`LABELS` on one part."""
    from gazeprep.text import Labeler, report_status

    df = pl.read_csv(csv_path, infer_schema_length=0)
    rows = [
        r
        for r in df.iter_rows(named=True)
        if part(str(r["uid"])) == which and (r.get("findings") or r.get("impression"))
    ]
    texts = [" ".join(x for x in (r.get("findings"), r.get("impression")) if x) for r in rows]
    lab = labeler or Labeler.from_rules()
    counts = {k: [0, 0, 0] for k in LABELS}  # tp, fp, fn
    for r, ms in zip(rows, lab.label_texts(texts)):
        t = truth(r["MeSH"])
        st = report_status(ms)
        for k in LABELS:
            p = st.get(k) in ("positive", "uncertain")
            c = counts[k]
            if p and k in t:
                c[0] += 1
            elif p:
                c[1] += 1
            elif k in t:
                c[2] += 1
    per = {}
    for k, (tp, fp, fn) in counts.items():
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        per[k] = (prec, rec, f1, tp + fn)
    f1s = [v[2] for v in per.values() if v[2] == v[2]]
    return {"n_reports": len(rows), "per_label": per, "macro_f1": sum(f1s) / len(f1s) if f1s else float("nan")}


def format_table(res: dict) -> str:
    lines = [f"reports: {res['n_reports']}", f"  {'label':30s} {'P':>6s} {'R':>6s} {'F1':>6s} {'n':>4s}"]
    for k, (p, r, f, n) in res["per_label"].items():
        lines.append(f"  {k:30s} {p:6.3f} {r:6.3f} {f:6.3f} {n:4d}")
    lines.append(f"  macro F1 = {res['macro_f1']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    from gazeprep.text import Labeler

    path = os.environ.get(ENV)
    if not path:
        sys.exit(f"set {ENV} to a copy of indiana_reports.csv")
    which = sys.argv[1] if len(sys.argv) > 1 else "test"
    profile = sys.argv[2] if len(sys.argv) > 2 else None
    print(format_table(evaluate(path, which, Labeler.from_rules(profile=profile))))
