from __future__ import annotations

import pytest
import torch

from embedkit.errors import EmbedkitError
from embedkit.tables import METHODS, full_parameters, plan_budget, tables_for_budget

CARD = {"user": 943, "item": 1682, "age": 61, "gender": 2, "occupation": 21, "zip": 795, "genre": 19}
VOCAB = {f: torch.arange(n) * 3 for f, n in CARD.items()}
FRACTIONS = [1.0, 0.25, 0.0625, 0.016]


def test_full_parameter_count():
    assert full_parameters(CARD, 16) == sum(n + 1 for n in CARD.values()) * 16 == 56480
    plan = plan_budget("full", CARD, 1.0)
    assert plan.num_parameters == plan.budget == 56480
    with pytest.raises(EmbedkitError, match="only exists at fraction 1"):
        plan_budget("full", CARD, 0.5)


PAIRS = [(m, f) for m in METHODS for f in FRACTIONS if m != "full" or f == 1.0]


@pytest.mark.parametrize(("method", "fraction"), PAIRS)
def test_module_parameters_match_the_plan(method, fraction):
    plan = plan_budget(method, CARD, fraction, 16)
    tables = tables_for_budget(method, VOCAB, fraction, 16)
    assert tables.num_parameters() == plan.num_parameters
    assert plan.budget == int(fraction * 56480 + 1e-9)
    assert all(d == 16 for d in tables.embedding_dims.values())
    if method != "qr":
        assert plan.num_parameters <= plan.budget
    assert plan.over_budget == (plan.num_parameters > plan.budget)
    if method in ("hashing", "unified"):
        # nearly all of the budget is used: waste below one row per feature
        assert plan.budget - plan.num_parameters < 16 * len(CARD)


def test_hashing_waterfilling_keeps_small_features_whole():
    plan = plan_budget("hashing", CARD, 0.25, 16)
    rows = plan.kwargs["num_rows"]
    assert rows["gender"] == 3 and rows["occupation"] == 22 and rows["age"] == 62 and rows["genre"] == 20
    big = [rows[f] for f in ("user", "item", "zip")]
    assert max(big) - min(big) <= 1 and min(big) > 62
    assert plan_budget("hashing", CARD, 1.0, 16).kwargs["num_rows"] == {f: n + 1 for f, n in CARD.items()}


def test_qr_fits_the_budget_when_it_can_and_flags_when_it_cannot():
    ok = plan_budget("qr", CARD, 0.25, 16)
    assert not ok.over_budget and ok.budget - ok.num_parameters < 0.02 * ok.budget
    assert ok.kwargs["num_remainders"]["gender"] == 3  # too small to shrink: one table
    tight = plan_budget("qr", CARD, 0.016, 16)
    assert tight.over_budget  # each table needs ~2 sqrt(n) rows
    m = tight.kwargs["num_remainders"]["item"]
    assert m == 42  # ceil(sqrt(1683)): the smallest two-table QR layout


def test_unified_plan():
    plan = plan_budget("unified", CARD, 0.0625, 16, num_chunks=4, num_tables=3)
    assert plan.kwargs == {"num_buckets": 882, "chunk_dim": 4, "num_chunks": 4, "num_tables": 3}
    t = tables_for_budget("unified", VOCAB, 0.0625, 16, num_chunks=4, num_tables=3)
    assert t.num_parameters() == 882 * 4 and len(t.tables) == 3
    with pytest.raises(EmbedkitError, match="must divide embedding_dim"):
        plan_budget("unified", CARD, 0.25, 16, num_chunks=3)


def test_bad_arguments():
    with pytest.raises(EmbedkitError, match="method must be one of"):
        plan_budget("tt-rec", CARD, 0.25)
    with pytest.raises(EmbedkitError, match="fraction must be in"):
        plan_budget("hashing", CARD, 0.0)
    with pytest.raises(EmbedkitError, match="fraction must be in"):
        plan_budget("hashing", CARD, 2)
