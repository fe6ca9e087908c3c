"""embedkit: train, compress, index, evaluate and diagnose text embedding models."""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": ("embedkit.models.loading", "load_encoder"),
    "model_fingerprint": ("embedkit.models.loading", "model_fingerprint"),
    "EmbeddingIndex": ("embedkit.retrieval.index", "EmbeddingIndex"),
    "EmbeddingCache": ("embedkit.cache", "EmbeddingCache"),
    "encode_cached": ("embedkit.cache", "encode_cached"),
    "quantizer_from_spec": ("embedkit.compression.spec", "quantizer_from_spec"),
    "parse_spec": ("embedkit.compression.spec", "parse_spec"),
    "model_identity": ("embedkit.models.identity", "identity"),
    "load_causal_lm": ("embedkit.models.loading", "load_causal_lm"),
    "Hit": ("embedkit.retrieval.index", "Hit"),
    "evaluate_index": ("embedkit.evaluation.retrieval", "evaluate_index"),
    "read_corpus": ("embedkit.data", "read_corpus"),
    "read_beir": ("embedkit.data", "read_beir"),
    "encode_to_shards": ("embedkit.encoding", "encode_to_shards"),
    "load_shards": ("embedkit.encoding", "load_shards"),
    "CompressionPipeline": ("embedkit.compression.pipeline", "CompressionPipeline"),
    "diagnose_embeddings": ("embedkit.analysis.diagnose", "diagnose_embeddings"),
    "EmbedkitError": ("embedkit.errors", "EmbedkitError"),
}


def __getattr__(name: str):
    # Lazy imports keep `import embedkit` and `embedkit --help` fast (torch loads only when used).
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'embedkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*_LAZY, "__version__"])


__all__ = list(_LAZY)
