"""Sizes of latent-attention pooling (:class:`~embedkit.models.pooling.LatentAttentionPooling`) without torch.

A recipe's ``pooling`` section is checked against the machine's memory before any model loads, and
the module checks its own size before it allocates anything; both use these counts.
"""

from __future__ import annotations

__all__ = ["latent_attention_parameters", "latent_attention_training_bytes", "latent_attention_terms"]


def latent_attention_parameters(dim: int, num_latents: int, mlp_ratio: int) -> int:
    """The module's parameter count: latents, three LayerNorms, the q/kv/out projections, the GEGLU MLP."""
    d, r, m = int(dim), int(num_latents), int(mlp_ratio)
    return (r * d + 3 * 2 * d + 4 * d * d           # latents, LayerNorms, to_q (d), to_kv (2d), to_out (d)
            + 2 * m * d * d + 2 * m * d + m * d * d + d)  # ff_in (d -> 2md) and ff_out (md -> d), with biases


def latent_attention_terms(dim: int, num_latents: int, mlp_ratio: int, *, rows: int, seq_len: int) -> dict[str, int]:
    """The bytes training the module takes, by what drives them (an estimate; float32, AdamW).

    ``num_latents``: the latents and every latent's LayerNorm and key/value projections (forward and
    gradient); ``mlp_ratio``: the MLP's weights; ``tokens``: the MLP's inner activations of ``rows``
    texts of up to ``seq_len`` tokens (forward and gradient). Weights take 16 bytes per parameter
    (the value, its gradient and AdamW's two moments). The attention itself runs blockwise and is
    left out; the transformer under the module is not counted. Measured on CPU (width 384, 100,000
    latents, 64 rows of 32 tokens): 1.4 GB peak for an estimate of 1.6 GB.
    """
    d, r, m = int(dim), int(num_latents), int(mlp_ratio)
    return {
        "num_latents": 16 * r * d + 2 * 4 * 3 * r * d,
        "mlp_ratio": 16 * (3 * m * d * d + 2 * m * d),
        "tokens": 2 * 4 * int(rows) * int(seq_len) * (3 * m * d + 4 * d),
        "other": 16 * (4 * d * d + 7 * d),
    }


def latent_attention_training_bytes(dim: int, num_latents: int, mlp_ratio: int, *, rows: int, seq_len: int) -> int:
    """The total of :func:`latent_attention_terms`."""
    return sum(latent_attention_terms(dim, num_latents, mlp_ratio, rows=rows, seq_len=seq_len).values())
