"""Sentence-level bias removal: a bias subspace from paired templated sentences, projected out by a
saveable sentence-transformers module.

This carries hard-debias's *neutralise* step to sentence encoders (in the spirit of Liang et al.,
"Towards Debiasing Sentence Representations", ACL 2020): each definitional pair (woman, man) is put
into neutral templates ("This is a {}.") and the principal directions of the centred pair
differences of the (L2-normalised) sentence embeddings form the bias subspace U (k x d). The module
:class:`BiasProjection` maps e -> e - U^T U e (optionally renormalised) and is saved as
``config.json`` + ``model.safetensors`` inside the model folder, so the debiased model reloads with
``SentenceTransformer(path, trust_remote_code=True)`` (sentence-transformers 6 asks for that flag for
any module class outside its own package; the class imported is this one, from embedkit). There is no equalise step: sentence embeddings have no vocabulary
of pairs to equalise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from sentence_transformers.base.modules.module import Module

from embedkit.errors import EmbedkitError

__all__ = ["DEFAULT_TEMPLATES", "templated_pairs", "fit_sentence_bias_subspace", "BiasProjection", "debias_sentence_encoder"]

DEFAULT_TEMPLATES = (
    "This is {}.", "That is {}.", "There is {}.", "Here is {}.", "{} is here.", "{} is there.",
    "The person is {}.", "I saw {} today.", "I talked to {}.", "{} works here.",
)


def templated_pairs(pairs: Sequence[Sequence[str]], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[tuple[str, str]]:
    """Every pair in every template: ``[(t.format(a), t.format(b)) for (a, b) in pairs for t in templates]``."""
    return [(t.format(a), t.format(b)) for a, b in pairs for t in templates]


def fit_sentence_bias_subspace(model, sentence_pairs: Sequence[tuple[str, str]], n_directions: int = 1):
    """(directions k x d float32, explained variance ratio) of the centred, normalised pair differences.

    Raises:
        EmbedkitError: fewer than 2 pairs, or n_directions larger than the rank allows.
    """
    if len(sentence_pairs) < 2:
        raise EmbedkitError(f"sentence bias: {len(sentence_pairs)} sentence pair(s) given; at least 2 are needed")
    if not 1 <= n_directions <= 2 * len(sentence_pairs) - 1:
        raise EmbedkitError(f"sentence bias: n_directions={n_directions} must be between 1 and {2 * len(sentence_pairs) - 1}")
    a = model.encode([p[0] for p in sentence_pairs], convert_to_numpy=True, normalize_embeddings=True)
    b = model.encode([p[1] for p in sentence_pairs], convert_to_numpy=True, normalize_embeddings=True)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise EmbedkitError("sentence bias: the model produced NaN/inf embeddings for the templated pairs")
    c = (a + b) / 2
    D = np.concatenate([a - c, b - c]).astype(np.float64)
    _, s, Vt = np.linalg.svd(D - D.mean(axis=0), full_matrices=False)
    U = Vt[:n_directions]
    sign = np.sign(((a - b) @ U.T).mean(axis=0))
    U = U * np.where(sign == 0, 1, sign)[:, None]
    return U.astype(np.float32), (s**2 / (s**2).sum())[:n_directions]


class BiasProjection(Module):
    """Sentence-transformers module removing a bias subspace from ``sentence_embedding``.

    Args:
        directions: k x d orthonormal rows (the bias subspace).
        renormalize: L2-normalise after projecting (use when the model normalises its outputs).

    Example:
        >>> U, _ = fit_sentence_bias_subspace(model, templated_pairs([("woman", "man"), ("she", "he")]))  # doctest: +SKIP
        >>> model.append(BiasProjection(U, renormalize=True)); model.save("debiased")                      # doctest: +SKIP
    """

    config_keys = ["dim", "n_directions", "renormalize"]

    def __init__(self, directions=None, renormalize: bool = False, dim: int | None = None, n_directions: int | None = None):
        super().__init__()
        if directions is None:
            if dim is None or n_directions is None:
                raise EmbedkitError("BiasProjection: pass directions (k x d)")
            directions = np.zeros((n_directions, dim), np.float32)
        U = torch.as_tensor(np.asarray(directions, dtype=np.float32))
        if U.ndim != 2 or not torch.isfinite(U).all():
            raise EmbedkitError(f"BiasProjection: directions must be a finite k x d matrix, got shape {tuple(U.shape)}")
        self.register_buffer("directions", U)
        self.renormalize = bool(renormalize)
        self.dim = int(U.shape[1])
        self.n_directions = int(U.shape[0])

    def forward(self, features: dict) -> dict:
        e = features["sentence_embedding"]
        U = self.directions.to(e.dtype)
        e = e - (e @ U.T) @ U
        if self.renormalize:
            e = torch.nn.functional.normalize(e, p=2, dim=-1)
        features["sentence_embedding"] = e
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        from safetensors.torch import save_file

        os.makedirs(output_path, exist_ok=True)
        self.save_config(output_path)
        save_file({"directions": self.directions.contiguous().cpu()}, os.path.join(output_path, "model.safetensors"))

    @classmethod
    def load(cls, model_name_or_path: str = "", subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs):
        from safetensors.torch import load_file

        kw = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision, local_files_only=local_files_only)
        config = {k: v for k, v in cls.load_config(model_name_or_path=model_name_or_path, **kw).items() if k in cls.config_keys}
        path = cls.load_file_path(model_name_or_path, filename="model.safetensors", **kw)
        if path is None:
            raise EmbedkitError(f"BiasProjection in {model_name_or_path!r}: model.safetensors is missing")
        U = load_file(path)["directions"]
        return cls(U.numpy(), renormalize=config.get("renormalize", False))


def debias_sentence_encoder(model, pairs: Sequence[Sequence[str]], *, templates: Sequence[str] = DEFAULT_TEMPLATES,
                            n_directions: int = 1, renormalize: bool | None = None):
    """Fit the bias subspace from templated ``pairs`` and append a :class:`BiasProjection` to ``model`` (in place).

    ``renormalize`` defaults to True when the model's last module is a Normalize layer.
    Returns ``(model, explained_variance_ratio)``.
    """
    U, evr = fit_sentence_bias_subspace(model, templated_pairs(pairs, templates), n_directions)
    if renormalize is None:
        renormalize = type(model[len(model) - 1]).__name__ == "Normalize"
    model.append(BiasProjection(U, renormalize=renormalize))  # a new module: the fingerprint follows by itself
    return model, evr
