"""Text stage: sentences from timestamped dictation, the rule-based labeler, accumulation windows.

Public API (the build pipeline calls these per case, polars in and out):

* :func:`build_sentences` - words with character offsets, sentences, rejects;
* :class:`Labeler` (``Labeler.from_rules()``; ``label_text``, ``label_texts``, ``label_case``);
* :func:`compute_windows` - the ``windows`` table for any window rule of :mod:`gazeprep.recipes`;
* :func:`map_case_labels`, :func:`label_groups`, :func:`label_ids` - canonical labels.

All rules are data in ``rules/`` (see ``rules/README.md``).
"""

from gazeprep.text.labeler import Labeler, Mention, report_status
from gazeprep.text.labels import implied_labels, label_groups, label_ids, map_case_labels
from gazeprep.text.sentences import build_sentences, rebuild_reflacx_text
from gazeprep.text.windows import compute_windows, keyword_spans

__all__ = [
    "Labeler",
    "Mention",
    "report_status",
    "build_sentences",
    "rebuild_reflacx_text",
    "compute_windows",
    "keyword_spans",
    "map_case_labels",
    "label_groups",
    "label_ids",
    "implied_labels",
]
