"""Sizes of latent-attention pooling (:class:`~embedkit.models.pooling.LatentAttentionPooling`) without torch.

A recipe's ``pooling`` section is checked against the machine's memory before any model loads, and
the module checks its own size before it allocates anything; both use these counts.

``inner`` is the attention's inner width, ``num_heads x head width``: ``num_heads x dim`` for NV-Embed's
reference layout (every head as wide as the model: ``cross_dim_head`` = hidden size in its released
config), ``dim`` for the split layout (``dim / num_heads`` per head). It defaults to ``dim``.
"""

from __future__ import annotations

__all__ = ["latent_attention_parameters", "latent_attention_training_bytes", "latent_attention_terms"]


def latent_attention_parameters(dim: int, num_latents: int, mlp_ratio: int, *, inner: int | None = None) -> int:
    """The module's parameter count: latents, three LayerNorms, the q/kv/out projections, the GEGLU MLP."""
    d, r, m = int(dim), int(num_latents), int(mlp_ratio)
    i = d if inner is None else int(inner)
    return (r * d + 3 * 2 * d + 4 * d * i           # latents, LayerNorms, to_q (d -> i), to_kv (d -> 2i), to_out (i -> d)
            + 2 * m * d * d + 2 * m * d + m * d * d + d)  # ff_in (d -> 2md) and ff_out (md -> d), with biases


def latent_attention_terms(dim: int, num_latents: int, mlp_ratio: int, *, rows: int, seq_len: int,
                           inner: int | None = None) -> dict[str, int]:
    """The bytes training the module takes, by what drives them (an estimate; float32, AdamW).

    ``num_latents``: the latents, their LayerNorm and their keys and values (``2 x inner`` wide; forward
    and gradient); ``mlp_ratio``: the MLP's weights; ``tokens``: per token of ``rows`` texts of up to
    ``seq_len`` tokens, the MLP's inner activations, the queries and attention output (``inner`` wide
    each) and two ``dim``-wide states (forward and gradient); ``other``: the q/kv/out projections
    (``4 x dim x inner`` weights) and the small vectors. Weights take 16 bytes per parameter (the
    value, its gradient and AdamW's two moments). The attention itself runs blockwise and is left out;
    the transformer under the module is not counted. Measured on CPU (``bench/latent_pooling.py
    --measure-memory``: one AdamW step of the module alone, width 384, 8 heads, 64 rows of 32 tokens):
    full-width heads with 512 latents, 0.23 GB peak for an estimate of 0.32 GB; split heads with 100,000
    latents, 1.04 GB for 1.67 GB. The estimate errs high, so a refused size does not fit.
    """
    d, r, m = int(dim), int(num_latents), int(mlp_ratio)
    i = d if inner is None else int(inner)
    return {
        "num_latents": 16 * r * d + 2 * 4 * r * (d + 2 * i),
        "mlp_ratio": 16 * (3 * m * d * d + 2 * m * d),
        "tokens": 2 * 4 * int(rows) * int(seq_len) * (3 * m * d + 2 * d + 2 * i),
        "other": 16 * (4 * d * i + 7 * d),
    }


def latent_attention_training_bytes(dim: int, num_latents: int, mlp_ratio: int, *, rows: int, seq_len: int,
                                    inner: int | None = None) -> int:
    """The total of :func:`latent_attention_terms`."""
    return sum(latent_attention_terms(dim, num_latents, mlp_ratio, rows=rows, seq_len=seq_len, inner=inner).values())
