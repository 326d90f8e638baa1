"""Shared synthetic releases for the synth tests (generated once per session, small)."""

from __future__ import annotations

import pytest

from gazeprep.synth import generate_egd, generate_mimic, generate_reflacx


@pytest.fixture(scope="session")
def mimic(tmp_path_factory):
    return generate_mimic(tmp_path_factory.mktemp("mimic"), 12, 7)


@pytest.fixture(scope="session")
def reflacx_small(tmp_path_factory, mimic):
    """The sample-data configuration: 12 readings on the MIMIC images."""
    return generate_reflacx(tmp_path_factory.mktemp("reflacx_small"), 12, 7, mimic_root=mimic.root, gaze_cases=2)


@pytest.fixture(scope="session")
def reflacx_big(tmp_path_factory):
    """Benchmark-style readings (no MIMIC root, long readings), 60 of them, one gaze file."""
    return generate_reflacx(tmp_path_factory.mktemp("reflacx_big"), 60, 11, gaze_cases=1)


@pytest.fixture(scope="session")
def egd(tmp_path_factory, mimic):
    return generate_egd(tmp_path_factory.mktemp("egd"), 8, 7, mimic_root=mimic.root)
