"""NV-Embed latent-attention pooling as a sentence-transformers module.

Lee et al. "NV-Embed: Improved Techniques for Training LLMs as Generalist Embedding Models."
ICLR 2025, arXiv 2405.17428; reference: ``modeling_nvembed.py`` of nvidia/NV-Embed-v2
(``LatentAttentionModel``), read for its structure, written anew here.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    from sentence_transformers.base.modules.module import Module
except ImportError:  # pragma: no cover - sentence-transformers < 6
    from sentence_transformers.models import Module  # type: ignore

from embedkit.errors import EmbedkitError
from embedkit.models.pooling_size import latent_attention_parameters
from embedkit.validation import check_memory

__all__ = ["LatentAttentionPooling", "exclude_prompt"]

logger = logging.getLogger(__name__)


class _GEGLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)


def exclude_prompt(attention_mask: Tensor, prompt_length: int | None) -> Tensor:
    """A copy of ``attention_mask`` with the first ``prompt_length`` real tokens of every row zeroed
    (the instruction is not pooled); left padding is respected, as sentence-transformers' Pooling does."""
    if not prompt_length:
        return attention_mask
    mask = attention_mask.clone()
    first_real = mask.to(torch.int32).argmax(dim=1)
    pos = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
    mask[pos < (first_real + int(prompt_length)).unsqueeze(1)] = 0
    return mask


class LatentAttentionPooling(Module):
    """Latent-attention pooling (NV-Embed): token states attend to a trainable latent array, then mean-pool.

    As in the reference code: queries = the last hidden states H (one per token); keys = values =
    a trainable array of ``num_latents`` latents; multi-head cross-attention with LayerNorm on both
    inputs (pre-norm) and a residual, ``H + Attn(LN(H), LN(latents))``; then a pre-norm GEGLU MLP of
    width ``mlp_ratio`` x dim with a residual; then a mean over the attention mask (instruction tokens
    excluded when ``include_prompt`` is False), and optionally L2 normalisation.

    Initialisation (the reference's): latents ~ N(0, 1); linear layers PyTorch's default (Kaiming
    uniform), LayerNorms at identity. Deviation: ``to_out`` starts at zero unless ``zero_init=False``,
    so a freshly added module is exactly mean pooling and fine-tuning a trained encoder starts from its
    own embeddings (the reference trains a 7B decoder from scratch on this head; with a small trained
    encoder a random residual branch first destroys what the encoder knew). The MLP's second layer is
    zero-initialised for the same reason.

    Heads: 8, each as wide as the model by default (``head_dim = embedding_dimension``), as in the
    reference: its ``Attention`` projects to ``num_heads x dim_head`` and NV-Embed's released config sets
    ``num_cross_heads`` 8 and ``cross_dim_head`` 4096 on a 4096-wide model, so the queries, keys and
    values are ``8 x 4096`` wide and each head attends over the full width. ``head_dim=dim // num_heads``
    is the usual split layout (one ``dim``-wide projection cut into heads: ``num_heads`` times fewer
    attention weights); folders saved before ``head_dim`` existed load in that layout.

    Saved folders load with :func:`embedkit.load_encoder` as they are. sentence-transformers 6 imports a
    module class from outside its own package only with ``trust_remote_code=True``, so plain
    ``SentenceTransformer(folder)`` needs that flag (with embedkit installed); ``load_encoder`` passes it
    only when embedkit's own classes are the folder's only custom code.

    Args:
        embedding_dimension: width of the token states (the transformer's hidden size).
        num_latents: r, the number of latents (512 in the paper).
        num_heads: attention heads.
        head_dim: width of each head; ``None`` (default) = ``embedding_dimension`` (the reference's
            full-width heads). ``embedding_dimension // num_heads`` gives the split layout.
        mlp_ratio: the GEGLU MLP's inner width as a multiple of the dimension (4 in the reference).
        normalize: L2-normalise the pooled output.
        include_prompt: pool instruction (prompt) tokens too; False excludes them, as NV-Embed does.
        zero_init: start as plain mean pooling (see above).

    Example:
        .. code-block:: python

            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import Transformer
            tr = Transformer("my-encoder")
            model = SentenceTransformer(modules=[tr, LatentAttentionPooling(tr.get_embedding_dimension())])
    """

    config_keys = ["embedding_dimension", "num_latents", "num_heads", "head_dim", "mlp_ratio", "normalize",
                   "include_prompt", "zero_init"]

    def __init__(self, embedding_dimension: int, num_latents: int = 512, num_heads: int = 8, mlp_ratio: int = 4,
                 normalize: bool = False, include_prompt: bool = False, zero_init: bool = True,
                 head_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None and isinstance(embedding_dimension, int) and not isinstance(embedding_dimension, bool):
            head_dim = embedding_dimension
        for name, value in (("embedding_dimension", embedding_dimension), ("num_latents", num_latents),
                            ("num_heads", num_heads), ("head_dim", head_dim), ("mlp_ratio", mlp_ratio)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EmbedkitError(f"latent attention {name}={value!r}: must be a whole number >= 1")
        inner = num_heads * head_dim
        n_params = latent_attention_parameters(embedding_dimension, num_latents, mlp_ratio, inner=inner)
        check_memory(4 * n_params, f"latent attention pooling with num_latents={num_latents}, mlp_ratio={mlp_ratio} "
                                   f"at width {embedding_dimension} ({n_params:,} float32 parameters)")
        self.embedding_dimension = embedding_dimension
        self.num_latents = num_latents
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.mlp_ratio = mlp_ratio
        self.normalize = normalize
        self.include_prompt = include_prompt
        self.zero_init = zero_init
        d = embedding_dimension
        self.latents = nn.Parameter(torch.randn(num_latents, d))
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, inner, bias=False)
        self.to_kv = nn.Linear(d, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, d, bias=False)
        self.norm_ff = nn.LayerNorm(d)
        self.ff_in = nn.Linear(d, 2 * mlp_ratio * d)
        self.ff_act = _GEGLU()
        self.ff_out = nn.Linear(mlp_ratio * d, d)
        if zero_init:
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.ff_out.weight)
            nn.init.zeros_(self.ff_out.bias)

    def token_states(self, hidden: Tensor) -> Tensor:
        """The per-token output of the attention and MLP blocks (before pooling).

        Every token attends to the same latents (no mask), so the batch is folded into one sequence of
        ``b * n`` queries against one copy of the keys and values: the same result as a per-text
        attention, without ``b`` copies of the ``num_latents x dim`` keys and values.
        """
        b, n, _ = hidden.shape
        h, dh = self.num_heads, self.head_dim
        q = self.to_q(self.norm_q(hidden)).reshape(1, b * n, h, dh).transpose(1, 2)
        k, v = self.to_kv(self.norm_kv(self.latents)).chunk(2, dim=-1)
        k = k.reshape(1, -1, h, dh).transpose(1, 2)
        v = v.reshape(1, -1, h, dh).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, k, v)  # (1, h, b*n, dh), scaled by 1/sqrt(dh) as the reference
        x = hidden + self.to_out(att.transpose(1, 2).reshape(b, n, h * dh))
        return x + self.ff_out(self.ff_act(self.ff_in(self.norm_ff(x))))

    def forward(self, features: dict[str, Tensor | Any], **kwargs) -> dict[str, Tensor | Any]:
        hidden = features["token_embeddings"]
        mask = features.get("attention_mask")
        if mask is None or mask.size(-1) != hidden.size(1):
            mask = torch.ones(hidden.shape[:-1], dtype=torch.int64, device=hidden.device)
        if not self.include_prompt and "prompt_length" in features:
            pl = features["prompt_length"]
            mask = exclude_prompt(mask, int(pl[0].item()) if isinstance(pl, Tensor) else int(pl))
        x = self.token_states(hidden)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        features["sentence_embedding"] = pooled
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs):
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
               "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path=model_name_or_path, **hub)
        config = {k: v for k, v in config.items() if k in cls.config_keys}
        if config.get("head_dim") is None and "embedding_dimension" in config:  # saved before head_dim: split heads
            config["head_dim"] = config["embedding_dimension"] // config.get("num_heads", 8)
        model = cls(**config)
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=model, **hub)
