from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from tiny_models import tiny_bert_sentence_transformer, tiny_gpt2  # noqa: E402

from embedkit.models.tempscale import (  # noqa: E402
    TempScaleError,
    apply_tempscale,
    preserved_attention,
    save_tempscaled,
    tempscale_of,
)


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    tiny_bert_sentence_transformer(d)
    return d


def _model(folder):
    return tiny_bert_sentence_transformer(folder / "again")  # same seed -> same weights


def first_layer_logits(bert, input_ids, mask):
    """QK^T / sqrt(d) of layer 0, head-split, computed by hand from the unscaled model."""
    with torch.no_grad():
        h = bert.embeddings(input_ids=input_ids)
        att = bert.encoder.layer[0].attention.self
        nh, hd = bert.config.num_attention_heads, bert.config.hidden_size // bert.config.num_attention_heads
        q = att.query(h).view(1, -1, nh, hd).transpose(1, 2)
        k = att.key(h).view(1, -1, nh, hd).transpose(1, 2)
        return q @ k.transpose(-1, -2) / math.sqrt(hd)


@pytest.mark.parametrize("tau", [0.5, 0.8, 1.7])
def test_scaled_query_equals_logits_over_tau(tmp_path, tau):
    st = tiny_bert_sentence_transformer(tmp_path)
    bert = st[0].auto_model
    bert.set_attn_implementation("eager") if hasattr(bert, "set_attn_implementation") else None
    ids = torch.tensor([[2, 5, 6, 7, 8, 9, 3]])
    mask = torch.ones_like(ids)
    logits = first_layer_logits(bert, ids, mask)
    with preserved_attention(st):
        apply_tempscale(st, tau)
        scaled = first_layer_logits(bert, ids, mask)
        torch.testing.assert_close(scaled, logits / tau, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            attn = bert(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0]
        torch.testing.assert_close(attn, torch.softmax(logits / tau, dim=-1), rtol=1e-5, atol=1e-6)
    # restored bit-exactly
    torch.testing.assert_close(first_layer_logits(bert, ids, mask), logits, rtol=0, atol=0)


def test_tau_one_is_identity_and_cumulative(tmp_path):
    st = tiny_bert_sentence_transformer(tmp_path)
    e0 = st.encode(["the man is a doctor"])
    apply_tempscale(st, 1.0)
    np.testing.assert_array_equal(st.encode(["the man is a doctor"]), e0)
    apply_tempscale(st, 0.5)
    apply_tempscale(st, 0.8)
    assert tempscale_of(st) == pytest.approx(0.4)
    assert not np.allclose(st.encode(["the man is a doctor"]), e0)


def test_saved_model_reloads_with_repair(tmp_path):
    from sentence_transformers import SentenceTransformer

    st = tiny_bert_sentence_transformer(tmp_path / "src")
    apply_tempscale(st, 0.7)
    e = st.encode(["she is a good nurse"])
    out = save_tempscaled(st, tmp_path / "repaired")
    assert (out / "embedkit_tempscale.json").exists()
    again = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(again.encode(["she is a good nurse"]), e, atol=1e-6)


def test_gpt2_fused_qkv(tmp_path):
    model, _ = tiny_gpt2(tmp_path)
    w = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    apply_tempscale(model, 0.5)
    d = w.shape[1] // 3
    new = model.transformer.h[0].attn.c_attn.weight
    torch.testing.assert_close(new[:, :d], w[:, :d] * 2)
    torch.testing.assert_close(new[:, d:], w[:, d:])


def test_errors():
    no_attention = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4))
    with pytest.raises(TempScaleError, match="no self-attention layers"):
        apply_tempscale(no_attention, 0.9)
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(TempScaleError, match="temperature"):
            apply_tempscale(no_attention, bad)
