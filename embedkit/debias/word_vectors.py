"""Static word vectors for hard-debias: from a sentence encoder, or trained with gensim.

A sentence encoder's vocabulary can be inspected like a word2vec model: each word is either
encoded alone (``method="encode"``: the full model, pooling and normalisation included) or read
from the input-embedding matrix (``method="input_embedding"``: the mean of the word's wordpiece
rows, no context at all).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from embedkit.errors import EmbedkitError

__all__ = ["encoder_word_vectors", "encoder_vocabulary", "to_keyed_vectors", "train_word2vec", "tokenize"]

_WORD = re.compile(r"[A-Za-z][A-Za-z'_-]*")


def tokenize(line: str) -> list[str]:
    """Word tokens (letters, apostrophes, hyphens, underscores); case kept."""
    return _WORD.findall(line)


def to_keyed_vectors(words: Sequence[str], vectors: np.ndarray):
    """Wrap words + an (n, d) array as gensim KeyedVectors (duplicates keep the first row)."""
    from gensim.models import KeyedVectors

    seen: dict[str, int] = {}
    for i, w in enumerate(words):
        seen.setdefault(w, i)
    idx = np.fromiter(seen.values(), dtype=np.int64)
    V = np.asarray(vectors, dtype=np.float32)[idx]
    kv = KeyedVectors(V.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(list(seen), V)
    return kv


def encoder_vocabulary(model, *, min_len: int = 2, lowercase_only: bool = True) -> list[str]:
    """Whole-word entries of the encoder's tokenizer vocabulary (alphabetic, no ``##`` pieces)."""
    tok = model.tokenizer
    vocab = tok.get_vocab()
    words = [w for w in vocab if w.isalpha() and len(w) >= min_len and (not lowercase_only or w.islower())]
    return sorted(words, key=lambda w: vocab[w])


def encoder_word_vectors(model, words: Iterable[str], *, method: str = "encode", show_progress: bool = True):
    """gensim KeyedVectors of ``words`` extracted from a sentence-transformers encoder.

    Args:
        model: SentenceTransformer.
        words: the vocabulary to extract (duplicates dropped, order kept).
        method: ``"encode"`` (each word encoded alone, through the embedding cache) or
            ``"input_embedding"`` (mean of the word's token rows of the input embedding matrix).

    Raises:
        EmbedkitError: unknown method, empty vocabulary, or no input-embedding matrix found.
    """
    words = list(dict.fromkeys(w for w in words if w and w.strip()))
    if not words:
        raise EmbedkitError("word vectors: the vocabulary is empty")
    if method == "encode":
        from embedkit.cache import encode_cached

        V = encode_cached(model, words, batch_size=256, show_progress=show_progress, desc="encoding words")
        return to_keyed_vectors(words, V)
    if method == "input_embedding":

        first = model[0]
        hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
        if hf is None or not hasattr(hf, "get_input_embeddings"):
            raise EmbedkitError("word vectors: the model's first module has no transformer with input embeddings")
        E = hf.get_input_embeddings().weight.detach().cpu().numpy()
        tok = model.tokenizer
        rows = []
        for w in words:
            ids = tok(w, add_special_tokens=False)["input_ids"]
            rows.append(E[ids].mean(axis=0) if ids else np.zeros(E.shape[1], np.float32))
        return to_keyed_vectors(words, np.stack(rows))
    raise EmbedkitError(f"word vectors: unknown method {method!r}; use 'encode' or 'input_embedding'")


def _stable_hash(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def train_word2vec(sentences: Iterable[str], *, vector_size: int = 100, window: int = 5, min_count: int = 5,
                   epochs: int = 5, workers: int = 1, seed: int = 0):
    """Train a gensim Word2Vec (CBOW) on raw lines; returns its KeyedVectors.

    Reproducible with ``workers=1`` (the default): the initial vectors are seeded with a stable
    string hash instead of Python's per-process randomised ``hash``. More workers are faster but
    not deterministic (thread scheduling).
    """
    from gensim.models import Word2Vec

    corpus = [t for t in (tokenize(s) for s in sentences) if t]
    if not corpus:
        raise EmbedkitError("word2vec: no tokens in the training text")
    m = Word2Vec(corpus, vector_size=vector_size, window=window, min_count=min_count, epochs=epochs,
                 workers=workers, seed=seed, hashfxn=_stable_hash)
    return m.wv
