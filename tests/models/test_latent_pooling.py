from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedkit.errors import EmbedkitError
from embedkit.models.pooling import LatentAttentionPooling


def _direct(mod: LatentAttentionPooling, H, mask, dh: int | None = None):
    """An independent loop over heads: softmax(q k^T / sqrt(dh)) v, residuals, GEGLU MLP, masked mean.

    ``dh``: the head width (default: the module's); queries, keys and values are ``num_heads x dh`` wide."""
    b, n, d = H.shape
    h = mod.num_heads
    dh = mod.head_dim if dh is None else dh
    Hn = F.layer_norm(H, (d,), mod.norm_q.weight, mod.norm_q.bias)
    L = F.layer_norm(mod.latents, (d,), mod.norm_kv.weight, mod.norm_kv.bias)
    Q = Hn @ mod.to_q.weight.T
    KV = L @ mod.to_kv.weight.T
    K, V = KV[:, : h * dh], KV[:, h * dh:]
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


@pytest.fixture(params=["full", "split"])
def module(request):
    torch.manual_seed(0)
    mod = LatentAttentionPooling(16, num_latents=6, num_heads=4, mlp_ratio=2, zero_init=False,
                                 head_dim=None if request.param == "full" else 4)
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


@pytest.mark.parametrize("kw,match", [({"head_dim": 0}, "head_dim"), ({"num_latents": 0}, "num_latents"),
                                      ({"num_heads": 2.0}, "whole number")])
def test_bad_parameters(kw, match):
    with pytest.raises(EmbedkitError, match=match):
        LatentAttentionPooling(16, **kw)


def test_default_is_the_reference_layout_eight_full_width_heads():
    """NV-Embed's released config: num_cross_heads 8, cross_dim_head = hidden size (4096 on a 4096-wide
    model), and its Attention projects to heads x dim_head: queries, keys and values 8 x d wide."""
    d = 24
    mod = LatentAttentionPooling(d, num_latents=5, zero_init=False)
    assert (mod.num_heads, mod.head_dim) == (8, d)
    assert tuple(mod.to_q.weight.shape) == (8 * d, d) and tuple(mod.to_kv.weight.shape) == (2 * 8 * d, d)
    assert tuple(mod.to_out.weight.shape) == (d, 8 * d)
    torch.manual_seed(1)
    H, mask = torch.randn(2, 4, d), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    got = mod({"token_embeddings": H, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(got, _reference_einsum(mod, H, mask), rtol=1e-5, atol=1e-5)


def _reference_einsum(mod, H, mask):
    """The reference's computation written with einsum over a (b, h, n, dh) layout, each text separately
    (keys and values repeated per text, as the reference does), in float64."""
    H = H.double()
    h, dh = mod.num_heads, mod.head_dim
    p = {k: v.detach().double() for k, v in mod.state_dict().items()}
    x = F.layer_norm(H, H.shape[-1:], p["norm_q.weight"], p["norm_q.bias"])
    ctx = F.layer_norm(p["latents"], H.shape[-1:], p["norm_kv.weight"], p["norm_kv.bias"])
    ctx = ctx.unsqueeze(0).expand(H.shape[0], -1, -1)
    q = torch.einsum("bnd,ed->bne", x, p["to_q.weight"]).unflatten(-1, (h, dh)).transpose(1, 2)
    kv = torch.einsum("brd,ed->bre", ctx, p["to_kv.weight"])
    k, v = (t.unflatten(-1, (h, dh)).transpose(1, 2) for t in kv.chunk(2, dim=-1))
    a = torch.softmax(torch.einsum("bhnk,bhrk->bhnr", q, k) * dh ** -0.5, dim=-1)
    o = torch.einsum("bhnr,bhrk->bhnk", a, v).transpose(1, 2).flatten(2)
    y = H + o @ p["to_out.weight"].T
    z = F.layer_norm(y, H.shape[-1:], p["norm_ff.weight"], p["norm_ff.bias"]) @ p["ff_in.weight"].T + p["ff_in.bias"]
    u, g = z.chunk(2, dim=-1)
    y = y + (u * F.gelu(g)) @ p["ff_out.weight"].T + p["ff_out.bias"]
    m = mask.unsqueeze(-1).double()
    return ((y * m).sum(1) / m.sum(1)).float()


def test_split_layout_and_a_folder_saved_before_head_dim_load_as_split(tmp_path):
    import json

    mod = LatentAttentionPooling(16, num_latents=3, num_heads=4, head_dim=4, zero_init=False)
    assert tuple(mod.to_q.weight.shape) == (16, 16)
    mod.save(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["head_dim"] == 4
    del cfg["head_dim"]  # a folder written before the key existed
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    again = LatentAttentionPooling.load(str(tmp_path))
    assert again.head_dim == 4
    H = torch.randn(2, 3, 16)
    mask = torch.ones(2, 3, dtype=torch.long)
    torch.testing.assert_close(again({"token_embeddings": H, "attention_mask": mask})["sentence_embedding"],
                               mod({"token_embeddings": H, "attention_mask": mask})["sentence_embedding"])


def test_parameter_count_and_memory_estimate_follow_the_head_width():
    from embedkit.models.pooling_size import latent_attention_parameters, latent_attention_terms

    for head_dim in (None, 2):
        mod = LatentAttentionPooling(16, num_latents=5, num_heads=8, mlp_ratio=3, head_dim=head_dim)
        inner = 8 * mod.head_dim
        assert sum(p.numel() for p in mod.parameters()) == latent_attention_parameters(16, 5, 3, inner=inner)
    full = latent_attention_terms(384, 512, 4, rows=64, seq_len=32, inner=8 * 384)
    split = latent_attention_terms(384, 512, 4, rows=64, seq_len=32, inner=384)
    assert full["other"] - split["other"] == 16 * 4 * 384 * (8 * 384 - 384)  # q/kv/out weights, AdamW
    assert full["tokens"] - split["tokens"] == 8 * 64 * 32 * 2 * (8 * 384 - 384)  # queries + attention output
