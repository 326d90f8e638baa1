"""The one Registry type (gazeprep.registry) and the registries built on it (datasets, metrics, models)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gazeprep.datasets import registry as dsreg
from gazeprep.datasets.base import DatasetAdapter
from gazeprep.errors import GazeprepError
from gazeprep.registry import Registry, RegistryError


def test_register_get_names_contains():
    r: Registry[int] = Registry("widget")
    assert r.register("b", 2) == 2
    r.register("a", 1)
    assert r.get("a") == 1 and r.get("b") == 2
    assert r.names() == ["a", "b"] and list(r) == ["a", "b"] and len(r) == 2
    assert "a" in r and "c" not in r and ["unhashable"] not in r
    assert r.items() == [("a", 1), ("b", 2)]


def test_duplicate_and_unknown_names_are_one_line_errors_listing_the_known_ones():
    r: Registry[int] = Registry("widget")
    r.register("beta", 1)
    r.register("alpha", 2)
    with pytest.raises(RegistryError) as dup:
        r.register("beta", 3)
    assert str(dup.value) == "widget 'beta' is already registered"
    assert r.get("beta") == 1  # the first registration stays
    with pytest.raises(RegistryError) as unknown:
        r.get("gamma")
    assert str(unknown.value) == "unknown widget 'gamma'; known widgets: alpha, beta"
    assert isinstance(unknown.value, GazeprepError) and "\n" not in str(unknown.value)
    with pytest.raises(RegistryError, match="known widgets: alpha, beta"):
        r.unregister("gamma")
    with pytest.raises(RegistryError, match="non-empty name"):
        r.register("", 0)
    empty: Registry[int] = Registry("index", plural="indices")
    with pytest.raises(RegistryError, match="^unknown index 'x'; known indices: none$"):
        empty.get("x")


def test_loader_runs_before_lookups_but_not_for_peek():
    calls = []
    r: Registry[str] = Registry("thing", loader=lambda: calls.append(1))
    r.register("x", "X")  # registering does not load (it may run while the loader imports a module)
    assert calls == [] and r.peek("x") == "X" and r.peek("y") is None and calls == []
    r.get("x")
    r.names()
    assert "x" in r
    assert len(calls) == 3
    assert r.unregister("x") == "X" and r.peek("x") is None


def test_dataset_registry_uses_the_generic_type():
    assert isinstance(dsreg.DATASETS, Registry)
    with pytest.raises(GazeprepError) as e:
        dsreg.get_adapter("reflax")
    assert str(e.value) == "unknown dataset 'reflax'; known datasets: egd-cxr, mimic-cxr, reflacx"


def test_register_dataset_twice_and_the_reserved_name():
    @dsreg.register_dataset
    class One(DatasetAdapter):
        name = "registry-test-one"

    try:
        first = dsreg.get_adapter("registry-test-one")

        class One(DatasetAdapter):  # noqa: F811 - the same module and class name: a module reloaded
            name = "registry-test-one"

        dsreg.register_dataset(One)
        assert dsreg.get_adapter("registry-test-one") is not first  # replaced

        class Other(DatasetAdapter):
            name = "registry-test-one"

        with pytest.raises(RegistryError, match="dataset 'registry-test-one' is already registered"):
            dsreg.register_dataset(Other)
    finally:
        dsreg.DATASETS.unregister("registry-test-one")

    class Reserved(DatasetAdapter):
        name = dsreg.DECLARED

    with pytest.raises(RegistryError, match="'declared' is reserved"):
        dsreg.register_dataset(Reserved)

    class Nameless(DatasetAdapter):
        pass

    with pytest.raises(RegistryError, match="no dataset name"):
        dsreg.register_dataset(Nameless)


def test_adapters_give_their_default_recipe_and_transcript_style():
    r, e, m = (dsreg.get_adapter(n) for n in ("reflacx", "egd-cxr", "mimic-cxr"))
    assert (r.default_recipe, e.default_recipe, m.default_recipe) == ("reflacx-label-specific", "egd-static", None)
    assert r.transcript.kind == "tokens" and e.transcript.kind == "phrases" and m.transcript is None
    # REFLACX tokens: '.' tokens end sentences, no space before ',' and '.'
    assert (
        r.transcript.join(["small", "effusion", ",", "no", "pneumothorax", "."]) == "small effusion, no pneumothorax."
    )
    assert r.transcript.ends_sentence(".") and not r.transcript.ends_sentence("3.5")
    # EGD phrases: a period ends a sentence unless it sits between two digits
    assert e.transcript.join(["A 3.5 cm", "nodule."]) == "A 3.5 cm nodule."
    assert e.transcript.ends_sentence("nodule.") and not e.transcript.ends_sentence("3.5 cm")
    with pytest.raises(GazeprepError, match="'mimic-cxr' declares no transcript style"):
        dsreg.transcript_style("mimic-cxr")


def test_metric_registry_is_the_generic_type():
    from gazeprep.evaluate import registry as mreg

    assert isinstance(mreg.METRICS, Registry)
    with pytest.raises(GazeprepError, match="^unknown metric 'nope'; known metrics: .*kld"):
        mreg.get_metric("nope")
    with pytest.raises(GazeprepError, match="^metric 'cc' is already registered$"):
        mreg.register_metric("cc", kind="map")(lambda p, g: 0.0)


def test_model_registry_is_the_generic_type():
    """Models behave as datasets and metrics: one-line errors on an unknown name (listing the known
    ones) and on a duplicate; the old ``unknown model ...; available: ...`` wording is gone."""
    pytest.importorskip("torch")
    from gazeprep.train import models

    assert isinstance(models.MODELS, Registry)
    known = models.list_models()
    assert known == sorted(known) and "ggcam-resnet50" in known and "lanfredi-mil" in known
    with pytest.raises(RegistryError) as e:
        models.get_model("ggcam-resnet5")
    assert str(e.value) == f"unknown model 'ggcam-resnet5'; known models: {', '.join(known)}"
    spec = models.spec_of("ggcam-resnet50")
    with pytest.raises(RegistryError, match="^model 'ggcam-resnet50' is already registered$"):
        models.register(models.ModelSpec("ggcam-resnet50", "002", "again", spec.build_model, spec.build_objective))
    assert models.spec_of("ggcam-resnet50") is spec  # the first registration stays


def test_model_registry_is_complete_without_a_loader():
    """A fresh interpreter that imports only the registry module (no loader importing the zoo back,
    which was an import cycle) still finds every built-in model."""
    pytest.importorskip("torch")
    code = "from gazeprep.train.models.registry import list_models; print(' '.join(list_models()))"
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    from gazeprep.train.models import list_models

    assert names == list_models() and len(names) >= 6


def test_window_rule_registry_covers_every_recipe_kind_and_dispatches_by_kind():
    """compute_windows dispatches through WINDOW_RULES: one entry per ``kind`` of the recipes'
    WindowRule union, a kind registered later is used as is, and an unregistered kind is the
    registry's one-line error listing the known kinds."""
    import typing
    from dataclasses import dataclass

    import polars as pl

    from gazeprep.recipes import WindowRule
    from gazeprep.text import windows as win

    union = typing.get_args(typing.get_args(WindowRule)[0])
    kinds = sorted(typing.get_args(m.model_fields["kind"].annotation)[0] for m in union)
    assert isinstance(win.WINDOW_RULES, Registry)
    assert win.WINDOW_RULES.names() == kinds == ["keyword_sentences", "phrase", "sentence", "whole_recording"]

    @dataclass
    class Fixed:
        kind: str
        end_s: float

    def fixed(rule, case):  # [0, rule.end_s] on target "full"
        return pl.DataFrame(
            [
                {
                    **case.ctx,
                    "target": "full",
                    "window_idx": 0,
                    "sentence_idx": None,
                    "t_start_s": 0.0,
                    "t_end_s": rule.end_s,
                }
            ]
        )

    empty_tables = dict(sentences=pl.DataFrame(), words=pl.DataFrame(), mentions=pl.DataFrame())
    call = dict(recording_end_s=9.0, dataset="toy", case_id="c1", recipe="r", **empty_tables)
    win.window_rule("registry-test-fixed")(fixed)
    try:
        out = win.compute_windows(Fixed("registry-test-fixed", 2.5), **call)
        assert out.row(0, named=True) == {
            "dataset": "toy",
            "case_id": "c1",
            "recipe": "r",
            "target": "full",
            "window_idx": 0,
            "sentence_idx": None,
            "t_start_s": 0.0,
            "t_end_s": 2.5,
        }
        with pytest.raises(RegistryError, match="^window rule 'phrase' is already registered$"):
            win.window_rule("phrase")(fixed)
    finally:
        win.WINDOW_RULES.unregister("registry-test-fixed")
    with pytest.raises(RegistryError) as e:
        win.compute_windows(Fixed("registry-test-fixed", 2.5), **call)
    assert str(e.value) == f"unknown window rule 'registry-test-fixed'; known window rules: {', '.join(kinds)}"
