from __future__ import annotations

import numpy as np
import pytest
import torch

from embedkit.errors import EmbedkitError
from embedkit.tables import (
    Bag,
    FullTables,
    HashingTrick,
    QRTrick,
    UnifiedEmbedding,
    hash_strings,
)

VOCAB = {"user": torch.arange(10, 60), "genre": torch.arange(19)}


def make(kind: str, pooling: str = "mean"):
    torch.manual_seed(0)
    if kind == "full":
        return FullTables(VOCAB, embedding_dim=4, pooling=pooling)
    if kind == "hashing":
        return HashingTrick(["user", "genre"], num_rows={"user": 13, "genre": 7}, embedding_dim=4, pooling=pooling)
    if kind == "qr":
        return QRTrick(VOCAB, num_remainders=6, embedding_dim=4, pooling=pooling)
    return UnifiedEmbedding(["user", "genre"], num_buckets=23, chunk_dim=2, num_chunks=2, pooling=pooling)


KINDS = ["full", "hashing", "qr", "unified"]


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_single_value_lookup(kind):
    t = make(kind)
    out = t({"user": torch.tensor([10, 11, 10]), "genre": torch.tensor([3, 4, 5])})
    assert list(out) == ["user", "genre"]
    assert out["user"].shape == (3, 4) and out["genre"].shape == (3, 4)
    assert torch.equal(out["user"][0], out["user"][2])
    assert t.output_dim == 8 and t.concat({"genre": torch.tensor([1]), "user": torch.tensor([12])}).shape == (1, 8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_bag_pooling_padding_and_offsets_agree(kind, pooling):
    t = make(kind, pooling)
    single = t({"genre": torch.tensor([1, 4, 7, 2])})["genre"]
    padded = t({"genre": torch.tensor([[1, 4, 7], [2, -1, -1], [-1, -1, -1]])})["genre"]
    bag = t({"genre": Bag(torch.tensor([1, 4, 7, 2]), torch.tensor([0, 3, 4]))})["genre"]
    lists = t({"genre": Bag.from_lists([[1, 4, 7], [2], []])})["genre"]
    three = single[:3].sum(0) / (3 if pooling == "mean" else 1)
    torch.testing.assert_close(padded[0], three)
    torch.testing.assert_close(padded[1], single[3])
    assert torch.equal(padded[2], torch.zeros(4))  # empty bag -> zeros
    torch.testing.assert_close(bag, padded)
    torch.testing.assert_close(lists, padded)


def test_strings_are_hashed_stably():
    t = HashingTrick(["zip"], num_rows=50, embedding_dim=3)
    a = t({"zip": ["02139", "T8H1N", "02139"]})["zip"]
    b = t({"zip": hash_strings(["02139", "T8H1N", "02139"])})["zip"]
    c = t({"zip": np.array(["02139", "T8H1N", "02139"])})["zip"]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    full = FullTables({"zip": ["02139", "T8H1N"]}, embedding_dim=3)
    assert full.rows("zip", hash_strings(["02139", "T8H1N", "nope"])).tolist()[2] == 0
    assert sorted(full.rows("zip", hash_strings(["02139", "T8H1N"])).tolist()) == [1, 2]


def test_full_tables_oov_shares_row_zero_and_vocab_rows_are_distinct():
    t = make("full")
    rows = t.rows("user", torch.tensor([10, 59, 60, 5, 10**12]))
    assert rows.tolist() == [1, 50, 0, 0, 0]
    assert len(set(t.rows("user", torch.arange(10, 60)).tolist())) == 50
    out = t({"user": torch.tensor([60, 10**12])})["user"]
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], t.tables["user"].weight[0])


def test_qr_gives_each_known_value_a_distinct_pair():
    t = make("qr")
    pairs = t.rows("user", torch.arange(10, 60))  # indices 1..50, m=6
    assert {tuple(p) for p in pairs.tolist()} == {(i % 6, i // 6) for i in range(1, 51)}
    v = torch.tensor([10, 11])
    i = t.vocab.index("user", v)
    expected = t.remainder["user"].weight[i % 6] * t.quotient["user"].weight[i // 6]
    torch.testing.assert_close(t({"user": v})["user"], expected)
    # genre: 20 rows -> q = 4; add / concat variants have the right widths
    for op in ("add", "concat"):
        q = QRTrick(VOCAB, num_remainders=6, embedding_dim=4, operation=op)
        assert q({"user": torch.tensor([12])})["user"].shape == (1, 4)
    # a feature that does not shrink keeps one table
    small = QRTrick({"g": [0, 1]}, num_remainders=8, embedding_dim=4)
    assert "g" not in small.quotient and small.num_parameters() == 3 * 4


def test_unified_concatenates_chunks_from_the_shared_table():
    t = UnifiedEmbedding(["a", "b", "c"], num_buckets=31, chunk_dim=3, num_chunks={"a": 3, "b": 1, "c": 2}, num_tables=2)
    assert t.embedding_dims == {"a": 9, "b": 3, "c": 6}
    assert [tab.num_embeddings for tab in t.tables] == [16, 15]
    assert t.num_parameters() == 31 * 3
    # round-robin over (feature, chunk): a0 a1 a2 b0 c0 c1 -> tables 0 1 0 1 0 1
    assert t.chunk_tables("a") == [0, 1, 0] and t.chunk_tables("b") == [1] and t.chunk_tables("c") == [0, 1]
    v = torch.tensor([4, -9])
    rows = t.rows("a", v)
    expected = torch.cat([t.tables[j].weight[rows[:, c]] for c, j in enumerate([0, 1, 0])], dim=1)
    torch.testing.assert_close(t({"a": v})["a"], expected)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_only_looked_up_rows(kind):
    t = make(kind, "sum")
    users = torch.tensor([10, 11, 11, 70])  # 70: OOV for the vocabulary tables
    genres = torch.tensor([[1, 2], [3, -1], [-1, -1], [5, 5]])
    out = t({"user": users, "genre": genres})
    (out["user"].sum() + (out["genre"] ** 2).sum()).backward()
    flat_genres = genres[genres != -1]
    if kind == "full":
        checks = [(t.tables["user"].weight, t.rows("user", users)), (t.tables["genre"].weight, t.rows("genre", flat_genres))]
    elif kind == "hashing":
        checks = [(t.tables["user"].weight, t.rows("user", users)), (t.tables["genre"].weight, t.rows("genre", flat_genres))]
    elif kind == "qr":
        ru, rg = t.rows("user", users), t.rows("genre", flat_genres)
        checks = [
            (t.remainder["user"].weight, ru[:, 0]), (t.quotient["user"].weight, ru[:, 1]),
            (t.remainder["genre"].weight, rg[:, 0]), (t.quotient["genre"].weight, rg[:, 1]),
        ]
    else:
        hit = torch.cat([t.rows("user", users).reshape(-1), t.rows("genre", flat_genres).reshape(-1)])
        checks = [(t.tables[0].weight, hit)]
    for weight, rows in checks:
        touched = (weight.grad.abs().sum(1) > 0).nonzero().flatten()
        assert set(touched.tolist()) == set(rows.tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_dtype_and_unknown_feature_are_clear_errors(kind):
    t = make(kind)
    with pytest.raises(EmbedkitError, match=r"feature 'user'.*integer ids.*torch.float32"):
        t({"user": torch.tensor([1.0, 2.0])})
    with pytest.raises(EmbedkitError, match=r"feature 'user'.*torch.bool"):
        t({"user": torch.tensor([True])})
    with pytest.raises(EmbedkitError, match=r"unknown feature 'item'.*\['user', 'genre'\]"):
        t({"item": torch.tensor([1])})
    with pytest.raises(EmbedkitError, match="expects a dict"):
        t(torch.tensor([1]))
    with pytest.raises(EmbedkitError, match="1-D .* or 2-D"):
        t({"user": torch.zeros(2, 2, 2, dtype=torch.int64)})
    with pytest.raises(EmbedkitError, match="offsets must start at 0"):
        t({"genre": Bag(torch.tensor([1, 2]), torch.tensor([0, 3]))})
    with pytest.raises(EmbedkitError, match="numpy array of dtype float64"):
        t({"user": np.array([1.5])})


@pytest.mark.parametrize("kind", ["full", "qr"])
def test_negative_ids_for_vocabulary_tables_are_clear_errors(kind):
    t = make(kind)
    with pytest.raises(EmbedkitError, match=r"feature 'user'.*needs ids >= 0, got -3"):
        t({"user": torch.tensor([4, -3])})
    # -1 inside a 2-D input is padding, not an id
    assert t({"user": torch.tensor([[10, -1]])})["user"].shape == (1, 4)
    with pytest.raises(EmbedkitError, match=r"vocabulary of feature 'x'.*>= 0"):
        FullTables({"x": [-1, 2]})


def test_hashed_tables_accept_negative_ids():
    t = make("hashing")
    assert t({"user": torch.tensor([-3, -(2**63)])})["user"].shape == (2, 4)


def test_constructor_errors():
    with pytest.raises(EmbedkitError, match="pooling must be one of"):
        HashingTrick(["a"], num_rows=4, pooling="max")
    with pytest.raises(EmbedkitError, match="num_rows for feature 'a' must be a positive int"):
        HashingTrick(["a"], num_rows=0)
    with pytest.raises(EmbedkitError, match="missing \\['b'\\]"):
        HashingTrick(["a", "b"], num_rows={"a": 3})
    with pytest.raises(EmbedkitError, match="without '.'"):
        HashingTrick(["a.b"], num_rows=3)
    with pytest.raises(EmbedkitError, match="unique"):
        UnifiedEmbedding(["a", "a"], num_buckets=3)
    with pytest.raises(EmbedkitError, match="num_tables"):
        UnifiedEmbedding(["a"], num_buckets=3, num_tables=4)
    with pytest.raises(EmbedkitError, match="operation must be one of"):
        QRTrick({"a": [1]}, num_remainders=2, operation="xor")
    with pytest.raises(EmbedkitError, match="expected integer ids"):
        FullTables({"a": torch.tensor([0.5])})
