"""Hard-debias of word vectors (Bolukbasi et al., NeurIPS 2016).

1. **Identify**: for each definitional pair (a, b) with centre c = (a + b) / 2, collect a - c and
   b - c; the bias direction g is their first principal component.
2. **Neutralise**: every word *not* in the gender-specific list loses its component along g
   (w <- w - (w.g) g); all vectors are renormalised.
3. **Equalise**: for each equalize pair, in its lower/Title/UPPER case variants present in the
   vocabulary: y = drop((a + b) / 2, g), z = sqrt(1 - ||y||^2), a <- y + s z g, b <- y - s z g with
   s the sign of (a - b).g; renormalise.

This follows the authors' reference code (``tolga-b/debiaswe``, ``debias.py``) step for step,
including that equalisation reads the *neutralised* vectors. WEFE's ``HardDebias`` (1.0.1) differs
there: it equalises from the vectors captured at ``fit`` time (before neutralisation), so words of
equalize pairs that are not in the gender-specific list come out differently (see
``bench/debias.py`` for the measured effect). All other words agree to float32 round-off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from embedkit.errors import DebiasInputError, NotFittedError

__all__ = ["HardDebias", "equalize_candidates"]



def equalize_candidates(pairs: Iterable[Sequence[str]]) -> list[tuple[str, str]]:
    """Lower, Title and UPPER case variants of each pair, deduplicated, in a stable order."""
    seen: dict[tuple[str, str], None] = {}
    for a, b in pairs:
        for f in (str.lower, str.title, str.upper):
            seen.setdefault((f(a), f(b)), None)
    return list(seen)


def _as_words_vectors(X, words):
    """Accept gensim KeyedVectors, or an (n, d) array plus a word list."""
    if hasattr(X, "index_to_key") and hasattr(X, "vectors"):
        return list(X.index_to_key), np.asarray(X.vectors)
    if words is None:
        raise DebiasInputError("word vectors: pass gensim KeyedVectors, or an array together with words=[...]")
    V = np.asarray(X)
    words = list(words)
    if V.ndim != 2 or len(words) != len(V):
        raise DebiasInputError(f"word vectors: {len(words)} words for an array of shape {V.shape}; counts must match")
    return words, V


def _normalize_rows(V: np.ndarray, what: str = "word vectors") -> np.ndarray:
    n = np.linalg.norm(V, axis=1, keepdims=True)
    if (n == 0).any():
        raise DebiasInputError(f"{what}: row {int(np.argmax(n[:, 0] == 0))} is all zeros and cannot be normalised")
    return V / n


class HardDebias:
    """Hard-debias estimator (scikit-learn style: ``fit`` learns ``bias_direction_``, ``transform`` debiases).

    Args:
        definitional_pairs: pairs defining the bias, e.g. ``[("woman", "man"), ("she", "he"), ...]``.
        equalize_pairs: pairs made equidistant from every neutral word (case variants included).
        gender_specific: words exempt from neutralisation.
        n_components: PCA components computed (only the first is used; the rest are reported in
            ``explained_variance_ratio_`` to show how one-dimensional the bias is).

    Attributes:
        bias_direction_: unit vector g (oriented so that a - b of the definitional pairs projects
            positively on it on average).
        explained_variance_ratio_: of the PCA over the centred definitional pairs.
        definitional_pairs_used_: pairs found in the vocabulary.

    Example:
        >>> import numpy as np
        >>> from embedkit.debias import HardDebias
        >>> rng = np.random.default_rng(0)
        >>> words = ["she", "he", "woman", "man", "nurse", "doctor"]
        >>> V = rng.standard_normal((6, 8))
        >>> hd = HardDebias([("she", "he"), ("woman", "man")], [], ["she", "he", "woman", "man"]).fit(V, words)
        >>> out = hd.transform(V, words)
        >>> abs(float(out[4] @ hd.bias_direction_)) < 1e-6
        True

    References:
        Bolukbasi, Chang, Zou, Saligrama, Kalai. "Man is to Computer Programmer as Woman is to
        Homemaker? Debiasing Word Embeddings." NeurIPS 2016. Reference code: tolga-b/debiaswe.
    """

    def __init__(self, definitional_pairs=(), equalize_pairs=(), gender_specific=(), n_components: int = 10):
        self.definitional_pairs = definitional_pairs
        self.equalize_pairs = equalize_pairs
        self.gender_specific = gender_specific
        self.n_components = n_components

    # -- fit ------------------------------------------------------------------------------
    def fit(self, X, words: Sequence[str] | None = None, y=None) -> HardDebias:
        """Learn the bias direction from the definitional pairs.

        Raises:
            DebiasInputError: NaN/inf vectors, mismatched word count, or fewer than 2 definitional
                pairs in the vocabulary (one pair gives a rank-1 difference matrix, too few rows
                for a principal direction to mean anything).
        """
        words, V = _as_words_vectors(X, words)
        index = {w: i for i, w in enumerate(words)}
        pairs = [(a, b) for a, b in self.definitional_pairs if a in index and b in index]
        if len(pairs) < 2:
            raise DebiasInputError(
                f"definitional pairs: only {len(pairs)} of {len(list(self.definitional_pairs))} pairs have both words in "
                "the vocabulary; at least 2 are needed to estimate a bias direction"
            )
        rows = np.asarray([index[w] for p in pairs for w in p])
        P = np.asarray(V[rows], dtype=np.float64)
        if not np.isfinite(P).all():
            raise DebiasInputError("word vectors: the definitional-pair vectors contain NaN or infinite values")
        P = _normalize_rows(P)
        A, B = P[0::2], P[1::2]
        C = (A + B) / 2
        D = np.empty_like(P)
        D[0::2], D[1::2] = A - C, B - C
        D = D - D.mean(axis=0)  # already ~0 by construction; kept to match PCA exactly
        _, s, Vt = np.linalg.svd(D, full_matrices=False)
        g = Vt[0]
        if float(((A - B) @ g).mean()) < 0:
            g = -g
        k = min(self.n_components, len(s))
        var = s**2
        self.bias_direction_ = g
        self.explained_variance_ratio_ = (var / var.sum())[:k]
        self.definitional_pairs_used_ = pairs
        self.n_features_in_ = V.shape[1]
        return self

    # -- transform --------------------------------------------------------------------------
    def transform(self, X, words: Sequence[str] | None = None):
        """Neutralise and equalise; returns the same kind as given (new KeyedVectors, or a float32 array).

        Raises:
            NotFittedError: before ``fit``.
            DebiasInputError: NaN/inf, wrong dimension, mismatched word count.
        """
        if not hasattr(self, "bias_direction_"):
            raise NotFittedError("HardDebias: call fit() before transform()")
        is_kv = hasattr(X, "index_to_key") and hasattr(X, "vectors")
        words, V = _as_words_vectors(X, words)
        if V.shape[1] != self.n_features_in_:
            raise DebiasInputError(f"word vectors: dimension {V.shape[1]}, but fitted on {self.n_features_in_}")
        V = np.asarray(V, dtype=np.float64)
        if not np.isfinite(V).all():
            bad = np.argwhere(~np.isfinite(V))[0][0]
            raise DebiasInputError(f"word vectors: NaN or infinite values (first in row {bad}, word {words[bad]!r})")
        g = self.bias_direction_
        index = {w: i for i, w in enumerate(words)}
        V = _normalize_rows(V)
        specific = set(self.gender_specific)
        neutral = np.fromiter((w not in specific for w in words), dtype=bool, count=len(words))
        V[neutral] -= np.outer(V[neutral] @ g, g)
        V = _normalize_rows(V, "word vectors after neutralisation (a word lying exactly on the bias direction)")
        self.equalized_pairs_ = []
        for a, b in equalize_candidates(self.equalize_pairs):
            if a in index and b in index:
                ia, ib = index[a], index[b]
                mid = (V[ia] + V[ib]) / 2
                y = mid - (mid @ g) * g
                z = np.sqrt(max(0.0, 1.0 - float(y @ y)))
                if float((V[ia] - V[ib]) @ g) < 0:
                    z = -z
                V[ia] = y + z * g
                V[ib] = y - z * g
                self.equalized_pairs_.append((a, b))
        V = _normalize_rows(V).astype(np.float32)
        if not is_kv:
            return V
        from gensim.models import KeyedVectors

        kv = KeyedVectors(V.shape[1], count=0, dtype=np.float32)
        kv.add_vectors(words, V)
        return kv

    def fit_transform(self, X, words=None, y=None):
        return self.fit(X, words).transform(X, words)
