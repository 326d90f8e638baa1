"""Labeler speed: label 10,000 synthetic reports on one core (target: under 10 s).

``python -m bench.labeler`` prints the result. The reports are built from dictation-like sentence
templates with random findings, sides, severities, negations and hedges (seeded), so almost every
report is a distinct string; the labeler's cache is cleared first, so the time covers real work
(``nlp.pipe`` over the distinct sentences). ``label_all_sentences_distinct_s`` repeats the run
with every sentence made unique, the worst case for the sentence cache.
"""

from __future__ import annotations

import json
import random
import time

FINDINGS = ["pleural effusion", "effusion", "pneumothorax", "atelectasis", "consolidation", "pulmonary edema",
            "opacity", "nodule", "mass", "cardiomegaly", "pneumonia", "ground-glass opacities",
            "interstitial lung disease", "rib fracture", "hiatal hernia", "emphysema"]
SIDES = ["left", "right", "bilateral", "bibasilar", "right lower lobe", "left upper lobe", "retrocardiac"]
SEVERITY = ["small", "moderate", "large", "mild", "trace", "minimal", ""]
TEMPLATES = [
    "no {f}.",
    "there is a {s} {side} {f}.",
    "{s} {side} {f}.",
    "possible {side} {f}.",
    "cannot exclude {f}.",
    "the {f} has resolved.",
    "{side} {f} may represent {f2}.",
    "no {f}, {f2} or {f3}.",
    "heart size is normal.",
    "the heart is mildly enlarged.",
    "endotracheal tube terminates {n} cm above the carina.",
    "the lungs are clear.",
    "likely {f} at the {side} base.",
    "{s} {f}, but no {f2}.",
    "stable {s} {f} is again seen.",
]


def synthetic_reports(n_reports: int, seed: int = 0) -> list[str]:
    """``n_reports`` dictation-like reports of 3-8 sentences."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_reports):
        sents = []
        for _ in range(rng.randint(3, 8)):
            t = rng.choice(TEMPLATES)
            f, f2, f3 = rng.sample(FINDINGS, 3)
            s = " ".join(t.format(f=f, f2=f2, f3=f3, s=rng.choice(SEVERITY), side=rng.choice(SIDES),
                                  n=rng.randint(2, 7)).split())
            sents.append(s)
        out.append(" ".join(sents))
    return out


def run(n_reports: int = 10000, profile: str = "gazeprep") -> dict:
    """Time labelling ``n_reports`` synthetic reports on one CPU with the labeler ``profile``; returns a
    dict of measurements (seconds)."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # one core: pin this process to its first allowed CPU for the measurement, then restore
    old_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if old_affinity:
        os.sched_setaffinity(0, {min(old_affinity)})
    try:
        return _measure(n_reports, profile)
    finally:
        if old_affinity:
            os.sched_setaffinity(0, old_affinity)


def _measure(n_reports: int, profile: str = "gazeprep") -> dict:
    t0 = time.perf_counter()
    from gazeprep.text.labeler import Labeler

    labeler = Labeler.from_rules(profile=profile)
    t_load = time.perf_counter() - t0
    reports = synthetic_reports(n_reports)
    labeler._cache.clear()
    t1 = time.perf_counter()
    results = labeler.label_texts(reports)
    t_label = time.perf_counter() - t1
    t2 = time.perf_counter()
    labeler.label_texts(reports)
    t_cached = time.perf_counter() - t2
    # worst case for the sentence cache: every sentence made distinct by a case number
    unique = [" ".join(f"case {k} {x}" for x in r.split(". ")) for k, r in enumerate(reports)]
    labeler._cache.clear()
    t3 = time.perf_counter()
    labeler.label_texts(unique)
    t_unique = time.perf_counter() - t3
    n_words = sum(len(r.split()) for r in reports)
    from gazeprep.text.labeler import split_sentences

    n_sentences = len({s for r in reports for _, s in split_sentences(r)})
    return {
        "profile": profile,
        "n_reports": n_reports,
        "n_distinct": len(set(reports)),
        "n_words": n_words,
        "n_distinct_sentences": n_sentences,
        "n_mentions": sum(len(r) for r in results),
        "load_s": round(t_load, 3),
        "label_s": round(t_label, 3),
        "reports_per_s": round(n_reports / t_label, 1),
        "label_cached_s": round(t_cached, 3),
        "label_all_sentences_distinct_s": round(t_unique, 3),
        "target_s": 10.0,
        "ok": t_label < 10.0,
    }


if __name__ == "__main__":
    print(json.dumps([run(profile=p) for p in ("gazeprep", "lanfredi2023")], indent=2))
