"""Evaluation and visual QA.

* :mod:`gazeprep.evaluate.metrics` - the papers' metrics as pure array-in, float-out functions
  (IoU sweep of 004, I-AI's fg/bg/fw IoU, SSIM, PSNR, L1, L2, KLD, CC, HS, MIT NSS/SIM/AUC-Judd,
  DiffGradCAM, EHR-AUC, GG-CAM interpretability, image AUC with bootstrap CIs), selected by name
  through :mod:`gazeprep.evaluate.registry` (``get_metric``, ``list_metrics``, ``register_metric``);
* :mod:`gazeprep.evaluate.evaluator` - one export against another (``gazeprep evaluate``);
* :mod:`gazeprep.evaluate.preview` - PNG overlays and HTML contact sheets (``gazeprep preview``);
* :mod:`gazeprep.evaluate.sweep` - 004's window search (``gazeprep sweep-windows``).
"""

from __future__ import annotations

# Importing the metrics module registers the built-in metrics; every import of a gazeprep.evaluate
# module runs this file first, so the registry is complete wherever it is used.
from gazeprep.evaluate import metrics as _builtin_metrics  # noqa: F401 - registers the built-ins
from gazeprep.evaluate.registry import Metric, get_metric, list_metrics, register_metric

__all__ = ["Metric", "get_metric", "list_metrics", "register_metric"]
