"""Bidirectional attention for decoder-only backbones (GPT-2, Llama, Mistral, Qwen, ...).

NV-Embed (Lee et al., ICLR 2025) and LLM2Vec remove the causal mask of a decoder LLM when using it as
an embedding model: every token attends to every other (non-padding) token. In transformers 5 this
takes two switches, both set here: ``config.is_causal = False`` makes the model build a padding-only
(bidirectional) mask instead of a causal one, and every attention module's ``is_causal`` flag is
cleared, because when no padding mask is needed the attention kernels fall back to that flag.

The config switch is saved with the model; the per-module flags are not (their constructors hard-code
True), so :func:`embedkit.load_encoder` re-applies :func:`make_bidirectional` to any model whose saved
config says ``is_causal: false``. Plain ``SentenceTransformer(folder)`` does not: call
``make_bidirectional(model[0].auto_model)`` after loading.
"""

from __future__ import annotations

import logging

from embedkit.errors import EmbedkitError

__all__ = ["make_bidirectional", "is_bidirectional", "load_decoder_encoder"]

logger = logging.getLogger(__name__)


def make_bidirectional(auto_model) -> int:
    """Remove the causal mask from every layer of a Hugging Face decoder model, in place.

    Returns:
        the number of attention modules switched (0 when the model was already bidirectional).

    Raises:
        EmbedkitError: no attention module with a causal flag was found.
    """
    n = 0
    for _, module in auto_model.named_modules():
        if getattr(module, "is_causal", None) is True and "attention" in type(module).__name__.lower():
            if getattr(module, "is_cross_attention", False):
                continue
            module.is_causal = False
            n += 1
    if n == 0 and is_bidirectional(auto_model):
        return 0  # already switched
    if n == 0:
        raise EmbedkitError(f"model {type(auto_model).__name__}: no causal self-attention layer found; "
                            "bidirectional attention applies to decoder-only models (GPT-2, Llama, Mistral, ...)")
    auto_model.config.is_causal = False
    for sub in ("text_config",):
        cfg = getattr(auto_model.config, sub, None)
        if cfg is not None:
            cfg.is_causal = False
    return n


def is_bidirectional(auto_model) -> bool:
    """True if the model's config asks for bidirectional attention (``is_causal`` False)."""
    return getattr(auto_model.config, "is_causal", True) is False


def load_decoder_encoder(name_or_path: str, *, pooling: str = "mean", max_seq_length: int = 512,
                         bidirectional: bool = True, normalize: bool = True, device: str | None = "cpu"):
    """A sentence-transformers model over a decoder-only LM: Transformer (causal mask removed) + pooling.

    Args:
        name_or_path: a transformers folder (or hub name) of a causal LM.
        pooling: ``"mean"``, ``"lasttoken"`` (sentence-transformers' Pooling modes) or ``"latent_attention"``
            (:class:`~embedkit.models.pooling.LatentAttentionPooling`).
        bidirectional: remove the causal mask (NV-Embed); False keeps the LM's causal attention.

    Example:
        .. code-block:: python

            model = load_decoder_encoder("path/to/llama", pooling="latent_attention")
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    tr = Transformer(str(name_or_path), max_seq_length=max_seq_length)
    tok = tr.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if bidirectional:
        make_bidirectional(tr.auto_model)
    dim = tr.get_embedding_dimension()
    if pooling == "latent_attention":
        from embedkit.models.pooling import LatentAttentionPooling

        pool = LatentAttentionPooling(dim, num_heads=8 if dim % 8 == 0 else 1)
    elif pooling in ("mean", "lasttoken", "cls", "max"):
        pool = Pooling(dim, pooling, include_prompt=False) if pooling == "mean" else Pooling(dim, pooling)
    else:
        raise EmbedkitError(f"pooling {pooling!r}: use mean, lasttoken, cls, max or latent_attention")
    modules = [tr, pool] + ([Normalize()] if normalize else [])
    return SentenceTransformer(modules=modules, device=device)
