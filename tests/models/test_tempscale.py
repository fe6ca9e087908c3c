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


def _tiny_qk_norm_lm(family: str):
    """A tiny random Qwen3 or Gemma3 text model (both normalise queries after the projection)."""
    torch.manual_seed(0)
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    if family == "qwen3":
        from transformers import Qwen3Config, Qwen3Model

        model = Qwen3Model(Qwen3Config(**common))
    else:
        from transformers import Gemma3TextConfig, Gemma3TextModel

        model = Gemma3TextModel(Gemma3TextConfig(**common, sliding_window=16, attn_logit_softcapping=None))
    with torch.no_grad():  # random gains, so the test does not pass only because the weights are 1 (or 0)
        for name, p in model.named_parameters():
            if "q_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    model.set_attn_implementation("eager")
    return model.eval()


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
@pytest.mark.parametrize("tau", [0.5, 1.6])
def test_qk_norm_models_logits_really_change_by_one_over_tau(family, tau):
    model = _tiny_qk_norm_lm(family)
    ids = torch.tensor([[1, 5, 9, 7, 3, 11, 2]])
    with torch.no_grad():
        before = model(input_ids=ids, output_attentions=True).attentions[0]
    apply_tempscale(model, tau)
    with torch.no_grad():
        after = model(input_ids=ids, output_attentions=True).attentions[0]
    # layer 0 sees the same inputs, so its attention must be softmax(logits / tau) = p^(1/tau), renormalised
    expected = before.double() ** (1.0 / tau)
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(after.double(), expected, rtol=1e-4, atol=1e-5)
    assert (after - before).abs().max() > 1e-2  # scaling q_proj alone changed it by ~1e-5: a no-op
    assert tempscale_of(model) == pytest.approx(tau)


def test_softcapped_attention_is_refused():
    from transformers import Gemma3TextConfig, Gemma3TextModel

    model = Gemma3TextModel(Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                             attn_logit_softcapping=50.0))
    with pytest.raises(TempScaleError, match="soft-capped"):
        apply_tempscale(model, 0.8)


def test_fingerprint_follows_tempscale_without_manual_reset(st_folder):
    from embedkit.models.loading import model_fingerprint

    st = _model(st_folder)
    fp = model_fingerprint(st)
    with preserved_attention(st):
        apply_tempscale(st, 0.8)
        assert model_fingerprint(st) != fp
    assert model_fingerprint(st) == fp  # restored weights, same fingerprint again
