"""Recipes: every shipped pipeline loads; bad files are rejected naming the file; hashes are stable."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from gazeprep.errors import RecipeError
from gazeprep.paths import default_pipelines_dir
from gazeprep.recipes import Recipe, list_recipes, load_recipe

SHIPPED = {
    "reflacx-label-specific", "reflacx-official", "reflacx-full-report", "egd-static", "egd-temporal",
    "egd-gaze-samples-max", "egd-gaze-samples-sum",
}


def test_every_shipped_recipe_loads():
    names = set(list_recipes())
    assert SHIPPED <= names
    for name in names:
        r = load_recipe(name)
        assert r.name == name
        assert r.dataset in {"reflacx", "egd-cxr"}
        if name in SHIPPED:  # these spell out every render/output field, each with its source
            raw = yaml.safe_load((default_pipelines_dir() / f"{name}.yaml").read_text())
            assert set(raw["render"]) == set(r.resolved()["render"]), name
            assert set(raw["output"]) == set(r.resolved()["output"]), name


def test_documented_parameters():
    ls = load_recipe("reflacx-label-specific")
    assert (ls.window.kind, ls.window.lag_s, ls.window.not_before, ls.window.end) == (
        "sentence", 1.5, "previous_sentence_start", "last_mention")
    assert (ls.render.weight, ls.render.clip_to_shown_rect, ls.render.normalize, ls.render.aggregate) == (
        "window_overlap", True, "max", "max")
    assert (ls.output.size, ls.output.letterbox_rule) == (512, "ricbl")
    off = load_recipe("reflacx-official")
    assert (off.render.weight, off.render.normalize, off.output.size) == ("duration", "sum", "native")
    assert load_recipe("reflacx-full-report").window.end == "last_word_end"
    assert load_recipe("egd-temporal").window.kind == "phrase"
    for v, norm in (("max", "max"), ("sum", "sum")):
        r = load_recipe(f"egd-gaze-samples-{v}")
        assert (r.render.source, r.render.normalize, r.output.shape, r.output.stride) == (
            "gaze_samples", norm, (640, 512), 5)


def test_resolved_and_hash_are_stable():
    for name in list_recipes():
        a, b = load_recipe(name), load_recipe(name)
        assert a.hash() == b.hash() and len(a.hash()) == 64
        again = Recipe.model_validate(a.resolved())
        assert again == a and again.hash() == a.hash()
    hashes = {load_recipe(n).hash() for n in list_recipes()}
    assert len(hashes) == len(list_recipes())  # recipes differ, so do their hashes
    r = load_recipe("reflacx-label-specific")
    native = r.with_overrides(size="native")
    assert native.output.size == "native" and native.hash() != r.hash()
    assert r.with_overrides(size=None) == r
    # a default written out or left implicit gives the same hash
    d = r.resolved()
    del d["render"]["truncate_sigmas"], d["output"]["stride"]
    assert Recipe.model_validate(d).hash() == r.hash()


def _write(tmp_path: Path, data, name="my-recipe") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _base() -> dict:
    d = load_recipe("reflacx-official").resolved()
    d["name"] = "my-recipe"
    return d


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(colour="viridis"), "colour"),
        (lambda d: d["render"].update(sigmaa=3), "render.sigmaa"),
        (lambda d: d["window"].update(lag=1.0), "lag"),
        (lambda d: d["render"]["sigma"].update(value=-1.0), "render.sigma.value"),
        (lambda d: d["render"]["sigma"].update(unit="mm"), "render.sigma.unit"),
        (lambda d: d["render"].update(normalize="l2"), "render.normalize"),
        (lambda d: d["render"].update(truncate_sigmas=1.0), "render.truncate_sigmas"),
        (lambda d: d["render"].update(source="gaze_samples", weight="duration"), "render"),
        (lambda d: d["output"].update(size=0), "output.size"),
        (lambda d: d["output"].update(size="512"), "output.size"),
        (lambda d: d["output"].update(size=[640, 512], letterbox_rule="ricbl"), "output"),
        (lambda d: d["output"].update(stride=5), "output"),
        (lambda d: d.update(dataset="mimic"), "dataset"),
        (lambda d: d.update(window={"kind": "sentense"}), "window"),
    ],
)
def test_bad_recipes_are_rejected_naming_the_file(tmp_path, mutate, field):
    d = copy.deepcopy(_base())
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert str(p) in msg and field.split(".")[0] in msg


def test_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "render: [unclosed"))
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(_write(tmp_path, "- a\n- b\n"))
    d = _base()
    d["name"] = "other"
    with pytest.raises(RecipeError, match="differs from the file name"):
        load_recipe(_write(tmp_path, d))
    with pytest.raises(RecipeError, match="reflacx-official"):  # unknown name lists the known ones
        load_recipe("no-such-recipe")
    # a valid custom recipe by path and by name from another folder
    d = _base()
    p = _write(tmp_path, d)
    assert load_recipe(p).name == "my-recipe"
    assert load_recipe("my-recipe", pipelines_dir=tmp_path).hash() == load_recipe(p).hash()


def test_recipe_allows_an_anatomy_filter_stage():
    d = _base()
    d["anatomy"] = {"masks": "samed", "heart_from_mediastinum_cut_top": 0.3333}
    r = Recipe.model_validate(d)
    assert r.anatomy is not None and r.resolved()["anatomy"]["masks"] == "samed"
