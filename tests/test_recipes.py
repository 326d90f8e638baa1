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
    "reflacx-label-specific",
    "reflacx-official",
    "reflacx-full-report",
    "egd-static",
    "egd-temporal",
    "egd-gaze-samples-max",
    "egd-gaze-samples-sum",
}


def test_every_shipped_recipe_loads():
    names = set(list_recipes())
    assert SHIPPED <= names
    for name in names:
        r = load_recipe(name)
        assert r.name == name
        assert r.dataset in {"reflacx", "egd-cxr", "declared"}  # declared: any YAML-declared dataset
        if name in SHIPPED:  # these spell out every render/output field, each with its source
            raw = yaml.safe_load((default_pipelines_dir() / f"{name}.yaml").read_text())
            assert set(raw["render"]) == set(r.resolved()["render"]), name
            assert set(raw["output"]) == set(r.resolved()["output"]), name


def test_documented_parameters():
    ls = load_recipe("reflacx-label-specific")
    assert (ls.window.kind, ls.window.lag_s, ls.window.not_before, ls.window.end) == (
        "sentence",
        1.5,
        "previous_sentence_start",
        "last_mention",
    )
    assert (ls.render.weight, ls.render.clip_to_shown_rect, ls.render.normalize, ls.render.aggregate) == (
        "window_overlap",
        True,
        "max",
        "max",
    )
    assert (ls.output.size, ls.output.letterbox_rule) == (512, "ricbl")
    off = load_recipe("reflacx-official")
    assert (off.render.weight, off.render.normalize, off.output.size) == ("duration", "sum", "native")
    assert load_recipe("reflacx-full-report").window.end == "last_word_end"
    assert load_recipe("egd-temporal").window.kind == "phrase"
    for v, norm in (("max", "minmax"), ("sum", "sum")):  # max: MT-UNet's min-max over its 640 x 512 sample
        r = load_recipe(f"egd-gaze-samples-{v}")
        assert (r.render.source, r.render.normalize, r.output.shape, r.output.stride) == (
            "gaze_samples",
            norm,
            (640, 512),
            5,
        )


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


# ----------------------------------------------------------------------------- bounds (issue 11.5)
@pytest.mark.parametrize(
    "mutate, field, needle",
    [
        (lambda d: d["output"].update(size=1_000_000), "output.size", "1..16384"),
        (lambda d: d["output"].update(size=[512, 16385]), "output.size", "1..16384"),
        (lambda d: d["output"].update(size=-3), "output.size", "1..16384"),
        # each side legal, the map too big: 16384 * 16384 * 4 B = 1024 MiB > 512 MiB
        (lambda d: d["output"].update(size=16384, fit="stretch"), "output.size", "1024 MiB"),
        (lambda d: d["output"].update(size=[11586, 11586], fit="stretch"), "output.size", "MAX_MAP_BYTES"),
        (lambda d: d["output"].update(size=[640, 512], fit="pad_crop_stride", stride=65), "output.stride", "64"),
        (lambda d: d["render"]["sigma"].update(value=0.0), "render.sigma.value", "greater than 0"),
        (lambda d: d["render"]["sigma"].update(value=float("nan")), "render.sigma.value", "finite"),
        (lambda d: d["render"]["sigma"].update(value=float("inf")), "render.sigma.value", "finite"),
        (lambda d: d["render"]["sigma"].update(value=20.5, unit="deg"), "render.sigma", "maximum of 20 deg"),
        (lambda d: d["render"]["sigma"].update(value=5001.0, unit="px"), "render.sigma", "maximum of 5000 px"),
        (lambda d: d["render"].update(truncate_sigmas=1e9), "render.truncate_sigmas", "40"),
        (lambda d: d["render"].update(truncate_sigmas=float("nan")), "render.truncate_sigmas", "finite"),
        (lambda d: d.update(window={"kind": "phrase", "lag_s": float("inf")}), "window.phrase.lag_s", "finite"),
        (lambda d: d.update(window={"kind": "phrase", "lag_s": 601.0}), "window.phrase.lag_s", "600"),
    ],
)
def test_absurd_values_are_one_line_errors_naming_file_and_field(tmp_path, mutate, field, needle):
    d = copy.deepcopy(_base())
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: {field}: "), msg
    assert needle in msg and "\n" not in msg


def test_legal_edges_load(tmp_path):
    from gazeprep.recipes import MAX_MAP_BYTES, MAX_OUTPUT_SIDE_PX, map_bytes

    # 16384 x 8192 float32 = exactly 512 MiB: at the limit, allowed
    assert map_bytes(16384, 8192) == MAX_MAP_BYTES == 512 * 1024 * 1024
    for size, fit in (
        ([MAX_OUTPUT_SIDE_PX, 8192], "stretch"),
        (1, "letterbox"),
        ([1, MAX_OUTPUT_SIDE_PX], "letterbox"),
    ):
        d = copy.deepcopy(_base())
        d["output"].update(size=size, fit=fit)
        assert load_recipe(_write(tmp_path, d)).output.size == (tuple(size) if isinstance(size, list) else size)
    d = copy.deepcopy(_base())
    d["output"].update(size=[640, 512], fit="pad_crop_stride", stride=64)
    d["render"]["sigma"].update(value=20.0, unit="deg")
    d["render"]["truncate_sigmas"] = 40.0
    r = load_recipe(_write(tmp_path, d))
    assert (r.output.stride, r.render.sigma.value, r.render.truncate_sigmas) == (64, 20.0, 40.0)
    d["render"]["sigma"].update(value=5000.0, unit="px")
    assert load_recipe(_write(tmp_path, d)).render.sigma.value == 5000.0


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"size": 1_000_000}, "output.size: size 1000000 is out of range"),
        ({"size": 0}, "output.size"),
        ({"size": 16384}, "1024 MiB"),
        ({"dtype": "float64"}, "output.dtype"),
        ({"size": "huge"}, "output.size"),
    ],
)
def test_overrides_pass_the_same_validation(overrides, needle):
    r = load_recipe("reflacx-label-specific")
    with pytest.raises(RecipeError) as exc:
        r.with_overrides(**overrides)
    msg = str(exc.value)
    assert "reflacx-label-specific.yaml" in msg and needle in msg and "\n" not in msg
    assert r.with_overrides(size=8192).output.size == 8192  # a legal override still works


def test_native_size_checked_per_case_at_render_time():
    """A native-size recipe rejects (not crashes on) a case whose image map would exceed the limit;
    a normal-size case of the same recipe renders."""
    import polars as pl

    from gazeprep.heatmaps import render_case

    r = load_recipe("reflacx-official")
    assert r.output.size == "native"
    fx = pl.DataFrame(
        {
            "dataset": ["reflacx"],
            "case_id": ["P1R1"],
            "fixation_idx": [0],
            "t_start_s": [0.0],
            "t_end_s": [1.0],
            "x_px": [5.0],
            "y_px": [5.0],
            "px_per_deg_x": [2.0],
            "px_per_deg_y": [2.0],
            "shown_xmin_px": [0.0],
            "shown_ymin_px": [0.0],
            "shown_xmax_px": [20.0],
            "shown_ymax_px": [20.0],
        }
    )
    win = pl.DataFrame(
        {
            "dataset": ["reflacx"],
            "case_id": ["P1R1"],
            "target": ["full"],
            "recipe": ["t"],
            "window_idx": [0],
            "sentence_idx": [None],
            "t_start_s": [None],
            "t_end_s": [None],
        },
        schema_overrides={"t_start_s": pl.Float64, "t_end_s": pl.Float64, "sentence_idx": pl.Int32},
    )
    maps, rej = render_case(fx, win, r, image_height_px=1_000_000, image_width_px=1_000_000)
    assert maps == {}
    assert len(rej) == 1 and rej[0]["case_id"] == "P1R1"
    assert "1000000 x 1000000" in rej[0]["reason"] and "MAX_MAP_BYTES" in rej[0]["reason"]
    maps, rej = render_case(fx, win, r, image_height_px=20, image_width_px=20)
    assert maps["full"].array.shape == (20, 20) and rej == []
