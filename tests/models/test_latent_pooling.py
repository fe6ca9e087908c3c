from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedkit.errors import EmbedkitError
from embedkit.models.pooling import LatentAttentionPooling


def _direct(mod: LatentAttentionPooling, H, mask):
    """An independent loop over heads: softmax(q k^T / sqrt(dh)) v, residuals, GEGLU MLP, masked mean."""
    b, n, d = H.shape
    h, dh = mod.num_heads, d // mod.num_heads
    Hn = F.layer_norm(H, (d,), mod.norm_q.weight, mod.norm_q.bias)
    L = F.layer_norm(mod.latents, (d,), mod.norm_kv.weight, mod.norm_kv.bias)
    Q = Hn @ mod.to_q.weight.T
    KV = L @ mod.to_kv.weight.T
    K, V = KV[:, :d], KV[:, d:]
    heads = []
    for j in range(h):
        s = slice(j * dh, (j + 1) * dh)
        a = torch.softmax(Q[..., s] @ K[:, s].T / math.sqrt(dh), dim=-1)
        heads.append(a @ V[:, s])
    X = H + torch.cat(heads, dim=-1) @ mod.to_out.weight.T
    y = F.layer_norm(X, (d,), mod.norm_ff.weight, mod.norm_ff.bias) @ mod.ff_in.weight.T + mod.ff_in.bias
    u, g = y[..., : y.shape[-1] // 2], y[..., y.shape[-1] // 2:]
    X = X + (u * F.gelu(g)) @ mod.ff_out.weight.T + mod.ff_out.bias
    m = mask.unsqueeze(-1).float()
    return (X * m).sum(1) / m.sum(1)


@pytest.fixture
def module():
    torch.manual_seed(0)
    mod = LatentAttentionPooling(16, num_latents=6, num_heads=4, mlp_ratio=2, zero_init=False)
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mod


def test_matches_a_direct_computation(module):
    H = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    got = module({"token_embeddings": H, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(got, _direct(module, H, mask), rtol=1e-5, atol=1e-5)


def test_instruction_tokens_are_excluded_from_the_pool(module):
    H = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    got = module({"token_embeddings": H, "attention_mask": mask, "prompt_length": 2})["sentence_embedding"]
    want_mask = mask.clone()
    want_mask[:, :2] = 0
    torch.testing.assert_close(got, _direct(module, H, want_mask), rtol=1e-5, atol=1e-5)
    module.include_prompt = True
    with_prompt = module({"token_embeddings": H, "attention_mask": mask, "prompt_length": 2})["sentence_embedding"]
    assert not torch.allclose(with_prompt, got)


def test_zero_init_is_mean_pooling():
    mod = LatentAttentionPooling(16, num_latents=4, num_heads=2)
    H = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    got = mod({"token_embeddings": H, "attention_mask": mask})["sentence_embedding"]
    m = mask.unsqueeze(-1).float()
    torch.testing.assert_close(got, (H * m).sum(1) / m.sum(1))


def test_save_load_round_trip_in_a_model_is_bit_exact(tmp_path, module):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    from embedkit.models.loading import load_encoder
    from embedkit.testing import make_tiny_model

    base = make_tiny_model(tmp_path / "tiny", hidden=16, heads=2)
    tr = SentenceTransformer(base, device="cpu")[0]
    assert isinstance(tr, Transformer)
    model = SentenceTransformer(modules=[tr, module], device="cpu")
    model.save(str(tmp_path / "with_latent"))
    again = load_encoder(tmp_path / "with_latent", device="cpu")
    texts = ["the cat", "a dog runs fast"]
    np.testing.assert_array_equal(model.encode(texts), again.encode(texts))
    assert type(again[1]).__name__ == "LatentAttentionPooling"


@pytest.mark.parametrize("kw,match", [({"num_heads": 5}, "does not divide"), ({"num_latents": 0}, "num_latents"),
                                      ({"num_heads": 2.0}, "whole number")])
def test_bad_parameters(kw, match):
    with pytest.raises(EmbedkitError, match=match):
        LatentAttentionPooling(16, **kw)
