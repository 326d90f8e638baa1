"""Metric registry: metrics are selected by name (``gazeprep evaluate --metrics kld,cc,nss``).

A metric is a pure function ``fn(pred, ref, **options) -> float``. Its ``kind`` says what ``ref`` is,
so that the evaluator knows what to pass:

``map``
    a continuous ground-truth map (rendered heatmap), e.g. KLD, CC, SIM, SSIM.
``fixations``
    a binary fixation map (fixations rounded to pixels), e.g. NSS, AUC-Judd.
``region``
    a binary region mask (ellipses, boxes, organ masks), e.g. IoU at a threshold, DiffGradCAM,
    EHR-AUC, the GG-CAM interpretability rate.
``binary``
    a binary ground truth and a binarised prediction compared pixel by pixel (fg/bg/fw IoU); these
    also have a dataset-level form (confusion matrices summed over images).
``image``
    image-level labels and scores (one value per image), e.g. ROC AUC.

Beyond its kind, an entry says what else the evaluator must do for it, so that the evaluator never
branches on a metric's name:

``threshold_curve``
    the metric thresholds the prediction (IoU of ``pred > threshold``, 004). ``threshold_curve(pred,
    ref)`` gives its value at every threshold of :data:`gazeprep.evaluate.metrics.THRESHOLDS_004`, so
    the evaluator can choose the threshold per label on the ``validate`` split; with a fixed
    threshold it is passed as ``threshold=``.
``confusion_key``
    the metric has a dataset-level form: the key of
    :func:`gazeprep.evaluate.metrics.ious_from_confusion` read on the 2 x 2 confusion matrices summed
    over images (I-AI's fg/bg/fw IoU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gazeprep.registry import Registry

if TYPE_CHECKING:
    import numpy as np

MetricKind = Literal["map", "fixations", "region", "binary", "image"]
KINDS: tuple[str, ...] = ("map", "fixations", "region", "binary", "image")


@dataclass(frozen=True)
class Metric:
    """A registered metric: the function plus what the evaluator needs to know about it."""

    name: str
    fn: Callable[..., float]
    kind: MetricKind
    higher_is_better: bool
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    #: value at each threshold of ``THRESHOLDS_004``, shape ``(n_thresholds,)``; None: not thresholded
    threshold_curve: Callable[[Any, Any], np.ndarray] | None = None
    #: key of ``ious_from_confusion`` for the dataset-level form; None: per-image mean only
    confusion_key: str | None = None

    def __call__(self, pred: Any, ref: Any, **options: Any) -> float:
        return self.fn(pred, ref, **{**self.options, **options})


#: name -> metric (the one registry type of gazeprep: same errors on duplicates and unknown names).
#: The built-in metrics register when :mod:`gazeprep.evaluate.metrics` is imported, which the
#: package's ``__init__`` does; Python imports a package before any of its modules, so every lookup
#: here sees them, without a loader importing metrics back (which would be an import cycle).
METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str,
    *,
    kind: MetricKind,
    higher_is_better: bool = True,
    source: str = "",
    threshold_curve: Callable[[Any, Any], np.ndarray] | None = None,
    confusion_key: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator: register ``fn`` under ``name``.

    ``options`` are default keyword arguments bound to this name, so one function can be registered
    under several names with different conventions (e.g. ``kld`` and ``kld_mtunet``).
    ``threshold_curve`` and ``confusion_key``: see the module docstring.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown metric kind {kind!r} (known: {', '.join(KINDS)})")

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        METRICS.register(
            name, Metric(name, fn, kind, higher_is_better, source, dict(options), threshold_curve, confusion_key)
        )
        return fn

    return deco


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; a :class:`GazeprepError` listing the known names otherwise."""
    return METRICS.get(name)


def list_metrics(kind: MetricKind | None = None) -> list[str]:
    """Names of the registered metrics (of one ``kind`` if given), sorted."""
    return [n for n, m in METRICS.items() if kind is None or m.kind == kind]
