"""The paper table names only recipes and models that exist, and every model's paper is in it."""

from __future__ import annotations

import pytest

from gazeprep.papers import PAPERS
from gazeprep.recipes import list_recipes


def test_paper_recipes_are_shipped() -> None:
    shipped = set(list_recipes())
    for paper in PAPERS.values():
        assert set(paper.recipes) <= shipped, paper.number


@pytest.mark.torch
def test_paper_models_exist_and_every_model_has_its_paper() -> None:
    pytest.importorskip("torch")
    from gazeprep.train.models import list_models, spec_of

    models = set(list_models())
    for paper in PAPERS.values():
        assert set(paper.models) <= models, paper.number
    for name in models:
        numbers = spec_of(name).paper.split("/")
        assert all(n in PAPERS and name in PAPERS[n].models for n in numbers), name
