"""The five papers gazeprep implements, with full citations (shown by ``gazeprep models`` and the README).

Keys are the paper numbers used throughout the code, recipes and docs ("paper 004").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    """One paper: its number, short name, full citation and what gazeprep takes from it."""

    number: str
    short: str
    citation: str
    recipes: tuple[str, ...]
    models: tuple[str, ...]


PAPERS: dict[str, Paper] = {
    p.number: p
    for p in (
        Paper(
            "000",
            "I-AI",
            "T. T. Pham, J. Brecheisen, A. Nguyen, H. Nguyen, N. Le. Decoding Radiologists' Intense Focus for "
            "Accurate CXR Diagnoses: A Controllable & Interpretable AI System. Preprint, 2024.",
            ("reflacx-anatomy",),
            ("iai-adapter",),
        ),
        Paper(
            "001",
            "Qiu",
            "Z. Qiu. Enhancing Visual Interpretability in Computer-Assisted Radiological Diagnosis: Deep Learning "
            "Approaches for Chest X-Ray Analysis. Master's thesis, Concordia University, Montreal, 2024.",
            ("egd-gaze-samples-max",),
            ("qiu-dual-unet", "gradcam-baseline"),
        ),
        Paper(
            "002",
            "GG-CAM",
            "H. Zhu, S. Salcudean, R. Rohling. Gaze-Guided Class Activation Mapping: Leveraging Human Attention "
            "for Network Attention in Chest X-rays Classification. Manuscript submitted to WACV 2022.",
            ("egd-gaze-samples-max",),
            ("ggcam-resnet50", "ggcam-efficientnetv2s"),
        ),
        Paper(
            "003",
            "heatmap generators",
            "U-Net classifiers with heatmap generators and eye-gaze heatmaps on EGD-CXR (normal / CHF / "
            "pneumonia), building on A. Karargyris et al., Creation and validation of a chest X-ray dataset "
            "with eye-tracking and report dictation for AI development, Scientific Data 8:92, 2021. "
            "(The stored copy of this paper has no title page.)",
            ("egd-static",),
            ("karargyris-unet", "gradcam-baseline"),
        ),
        Paper(
            "004",
            "Lanfredi",
            "R. Bigolin Lanfredi et al. Localization supervision of chest x-ray classifiers using label-specific "
            "eye-tracking annotation. Frontiers in Radiology 3:1088068, 2023. doi:10.3389/fradi.2023.1088068",
            ("reflacx-label-specific", "reflacx-full-report"),
            ("lanfredi-mil",),
        ),
    )
}
