from __future__ import annotations

import json

import pytest
import torch

from embedkit.errors import EmbedkitError
from embedkit.tables import (
    Bag,
    CategoricalTables,
    FullTables,
    HashingTrick,
    QRTrick,
    UnifiedEmbedding,
    load_tables,
)

VOCAB = {"user": torch.arange(5, 300, 7), "zip": ["02139", "T8H1N", "10001"], "genre": torch.arange(19)}
FEATURES = list(VOCAB)


def build(kind):
    torch.manual_seed(1)
    if kind == "full":
        return FullTables(VOCAB, embedding_dim=6, pooling="sum", padding_value=-2)
    if kind == "hashing":
        return HashingTrick(FEATURES, num_rows={"user": 11, "zip": 5, "genre": 7}, embedding_dim=6, seed=4)
    if kind == "qr":
        return QRTrick(VOCAB, num_remainders={"user": 7, "zip": 2, "genre": 5}, embedding_dim=6, operation="concat")
    return UnifiedEmbedding(FEATURES, num_buckets=37, chunk_dim=3, num_chunks={"user": 2, "zip": 1, "genre": 2},
                            num_tables=2, seed=9, pooling="sum")


def batch(kind):
    pad = -2 if kind == "full" else -1
    return {
        "user": torch.tensor([5, 12, 13, 10**9]),
        "zip": ["02139", "T8H1N", "99999", "02139"],
        "genre": torch.tensor([[1, 2], [3, pad], [pad, pad], [4, 4]]),
    }


@pytest.mark.parametrize("kind", ["full", "hashing", "qr", "unified"])
def test_save_load_round_trip_gives_identical_outputs(kind, tmp_path):
    t = build(kind)
    with torch.no_grad():  # move weights away from their init so a re-init could not pass
        for p in t.parameters():
            p.add_(torch.randn_like(p))
    t.save(tmp_path / "tables")
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["config.json", "model.safetensors"]
    for loaded in (type(t).load(tmp_path / "tables"), load_tables(tmp_path / "tables")):
        assert type(loaded) is type(t)
        assert loaded.get_config() == t.get_config()
        a, b = t(batch(kind)), loaded(batch(kind))
        for f in FEATURES:
            assert torch.equal(a[f], b[f])
        assert loaded.num_parameters() == t.num_parameters()
    # overwriting an existing folder works and is atomic (no temp folders left)
    t.save(tmp_path / "tables")
    assert [p.name for p in tmp_path.iterdir()] == ["tables"]


def test_load_errors(tmp_path):
    with pytest.raises(EmbedkitError, match="not a saved embedding table"):
        load_tables(tmp_path / "missing")
    build("hashing").save(tmp_path / "h")
    with pytest.raises(EmbedkitError, match="holds a 'HashingTrick', which is not a FullTables"):
        FullTables.load(tmp_path / "h")
    assert isinstance(CategoricalTables.load(tmp_path / "h"), HashingTrick)
    cfg = json.loads((tmp_path / "h" / "config.json").read_text())
    cfg["config"]["num_rows"]["user"] = 12
    (tmp_path / "h" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EmbedkitError, match="does not match"):
        load_tables(tmp_path / "h")
    (tmp_path / "h" / "config.json").write_text("{not json")
    with pytest.raises(EmbedkitError, match="not valid JSON"):
        load_tables(tmp_path / "h")
    (tmp_path / "h" / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(EmbedkitError, match="not an embedkit table folder"):
        load_tables(tmp_path / "h")


def test_bag_input_after_reload(tmp_path):
    t = build("unified")
    t.save(tmp_path / "u")
    u = load_tables(tmp_path / "u")
    bag = Bag.from_lists([[1, 2, 3], []])
    assert torch.equal(t({"genre": bag})["genre"], u({"genre": bag})["genre"])
