"""Evaluation and visual QA: the papers' metrics (:mod:`gazeprep.evaluate.metrics`, selected by name
through :mod:`gazeprep.evaluate.registry`), export-vs-export evaluation
(:mod:`gazeprep.evaluate.evaluator`) and preview overlays (:mod:`gazeprep.evaluate.preview`)."""

from __future__ import annotations

from gazeprep.evaluate.registry import Metric, get_metric, list_metrics, register_metric

__all__ = ["Metric", "get_metric", "list_metrics", "register_metric"]
