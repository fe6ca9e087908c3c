"""The procedure Lbl2Vec and Lbl2TransformerVec share, and their folder format.

Steps 2-6 of Lbl2Vec (keyword centroids -> document selection -> optional outlier cleaning ->
label vectors -> cosine scores) live in :class:`KeywordTopics`; subclasses provide the vectors
(:class:`embedkit.topics.doc2vec.Lbl2Vec`, :class:`embedkit.topics.transformer.Lbl2TransformerVec`).

After the label vectors are built, :class:`KeywordTopics` refuses *collapsed* labels: two labels
whose selected documents are nearly the same set (Jaccard > :data:`COLLAPSE_JACCARD`) or whose
label vectors point the same way (cosine > :data:`COLLAPSE_COSINE`, measured after subtracting the
mean of all candidate documents, so that an anisotropic encoder whose vectors all point one way
does not look collapsed) cannot be told apart, and every prediction between them is noise. ``fit`` then raises :class:`~embedkit.errors.LabelCollapseError`
naming the labels and the selection setting to change.

Folder format (``lbl2vec.json`` + ``vectors.npz`` + ``documents.json`` + the subclass's files),
written atomically through :func:`embedkit._io.atomic_directory` and marked as an embedkit
``lbl2vec`` output; nothing is pickled.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from embedkit._io import atomic_directory, atomic_save_npz, atomic_write_json, load_npz, mark_output, prepare_output
from embedkit.errors import DataFormatError, EmbedkitError, LabelCollapseError
from embedkit.validation import check_is_fitted

logger = logging.getLogger(__name__)

__all__ = ["AUTO_MIN_DOCS_SHARE", "COLLAPSE_COSINE", "COLLAPSE_JACCARD", "FORMAT",
           "FORMAT_VERSION", "MANIFEST", "KeywordTopics", "auto_min_num_docs", "cosine", "read_manifest", "unit"]

FORMAT = "embedkit-lbl2vec"
FORMAT_VERSION = 1
MANIFEST = "lbl2vec.json"
OUTPUT_KIND = "lbl2vec"

#: two labels whose selected-document sets have a Jaccard index above this have collapsed
COLLAPSE_JACCARD = 0.95
#: two labels whose label vectors have a cosine above this have collapsed
COLLAPSE_COSINE = 0.99

#: ``min_num_docs="auto"`` (the default): this share of the documents per label (measured with
#: bench/lbl2vec.py, all-MiniLM-L6-v2, macro-F1 AG News / BBC News: share 0.05 -> 0.820 / 0.734,
#: 0.25 -> 0.831 / 0.822, 0.5 -> 0.836 / 0.888, 1.0 -> 0.834 / 0.913 with a lower ROC AUC; the
#: reference's 1 document: 0.693 / 0.457, its examples' 100: 0.820 / 0.810)
AUTO_MIN_DOCS_SHARE = 0.5

# ---------------------------------------------------------------------------------------------
# small helpers


def auto_min_num_docs(n_documents: int, n_labels: int) -> int:
    """The documents each label vector averages with ``min_num_docs="auto"``: :data:`AUTO_MIN_DOCS_SHARE`
    (half) of the documents per label, counting ``fit``'s documents (not extra documents), at least 1.

    One document (the reference package's default) makes the label vector that document's vector,
    noise included; the best-matching half of a label's expected share averages the noise out while
    staying on topic (``bench/lbl2vec.py``, docs/lbl2vec.md). A topic much rarer than the others gets
    documents of other topics too: then give ``min_num_docs`` about half its expected count.

    Example:
        >>> auto_min_num_docs(7600, 4), auto_min_num_docs(2225, 5), auto_min_num_docs(3, 4)
        (950, 222, 1)
    """
    return int(max(1, round(AUTO_MIN_DOCS_SHARE * n_documents / max(1, n_labels))))


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32; zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def cosine(docs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``docs`` to every row of ``labels``, shape ``(n_docs, n_labels)``."""
    return unit(docs) @ unit(labels).T


def normalise_keywords(keywords, label_names, display_names=None) -> tuple[list[str], list[list[str]], list[str]]:
    """Accept ``{label: [keywords]}``, a :class:`~embedkit.data.KeywordFile`, or a list of keyword
    lists (+ optional label names); return (label names, keyword lists, display names)."""
    from embedkit.data.keywords import KeywordFile

    if isinstance(keywords, KeywordFile):
        if label_names is not None:
            raise EmbedkitError("a KeywordFile names its labels; do not also pass label_names")
        names, lists = list(keywords.labels), list(keywords.keywords)
        if display_names is None:
            display_names = keywords.display_names
    elif isinstance(keywords, Mapping):
        if label_names is not None:
            raise EmbedkitError("give label names either as the keys of `keywords` or as `label_names`, not both")
        names = [str(k) for k in keywords]
        lists = [keywords[k] for k in keywords]
    else:
        if isinstance(keywords, str):
            raise EmbedkitError("keywords must be a list of keyword lists (one per label) or a {label: keywords} dict")
        lists = list(keywords)
        names = [str(n) for n in label_names] if label_names is not None else [f"label_{i}" for i in range(len(lists))]
        if len(names) != len(lists):
            raise EmbedkitError(f"{len(names)} label names for {len(lists)} keyword lists; give one name per list")
    if not lists:
        raise EmbedkitError("no labels: give at least one keyword list")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise EmbedkitError(f"label {dup!r} appears twice")
    out = []
    for name, kws in zip(names, lists):
        if isinstance(kws, str):
            kws = kws.split()
        kws = [str(k).strip() for k in kws if str(k).strip()]
        if not kws:
            raise EmbedkitError(f"label {name!r} has an empty keyword list; give it at least one keyword")
        out.append(kws)
    if display_names is None:
        shown = list(names)
    else:
        shown = [str(d) if d not in (None, "") else n for n, d in zip(names, display_names)]
        if len(list(display_names)) != len(names):
            raise EmbedkitError(f"{len(list(display_names))} display names for {len(names)} labels; give one per label")
    return names, out, shown


def check_documents(documents, what: str = "document", allow_empty_list: bool = False) -> list[str]:
    """The documents as a list, refused (one line, naming the position) if any is not a non-empty string."""
    from embedkit.data import check_texts

    check_texts(documents, what)
    docs = list(documents)
    if not docs and not allow_empty_list:
        raise EmbedkitError(f"no {what}s given")
    return docs


# ---------------------------------------------------------------------------------------------
# the shared procedure


class KeywordTopics:
    """Steps 2-6 of Lbl2Vec, shared by both classes; subclasses provide the vectors.

    Subclasses set ``_kind`` (the ``kind`` stored in the folder) and implement
    ``_keyword_centroids``, ``_embed_new``, ``save`` and ``load``.
    """

    _kind = ""

    # -- subclass hooks
    def _keyword_centroids(self, keywords: list[list[str]]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _embed_new(self, documents: list[str]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # -- sklearn plumbing
    def get_params(self, deep: bool = True) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params):
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise EmbedkitError(f"unknown parameter {k!r} for {type(self).__name__}")
            setattr(self, k, v)
        return self

    def _check_fitted(self) -> None:
        check_is_fitted(self, "label_vectors_")

    def _validate_selection_params(self) -> None:
        from embedkit.validation import check_finite_number, check_positive_int

        auto = isinstance(self.min_num_docs, str) and self.min_num_docs == "auto"
        if self.min_num_docs is not None and not auto:
            if isinstance(self.min_num_docs, str):
                raise EmbedkitError(f"min_num_docs must be a whole number >= 1 or 'auto', got {self.min_num_docs!r}")
            check_positive_int(self.min_num_docs, "min_num_docs")
        if self.max_num_docs is not None:
            check_positive_int(self.max_num_docs, "max_num_docs")
            if self.min_num_docs is not None and not auto and int(self.max_num_docs) < int(self.min_num_docs):
                raise EmbedkitError(f"max_num_docs ({self.max_num_docs}) is below min_num_docs ({self.min_num_docs})")
        if self.similarity_threshold is not None:
            check_finite_number(self.similarity_threshold, "similarity_threshold", low=-1.0, high=1.0)
        check_finite_number(self.similarity_threshold_offset or 0.0, "similarity_threshold_offset", low=0.0)
        if self.unknown_keywords not in ("warn", "error", "ignore"):
            raise EmbedkitError(f"unknown_keywords must be 'warn', 'error' or 'ignore', got {self.unknown_keywords!r}")

    # -- label vectors
    def _select(self, centroid: np.ndarray, pool_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Indices and scores of the candidate documents for one label (best first), and which
        setting decided their number (``"threshold"``, ``"min_num_docs"`` or ``"max_num_docs"``)."""
        scores = pool_unit @ unit(centroid)
        order = np.argsort(-scores, kind="stable")
        capped = self.max_num_docs is not None and len(order) > int(self.max_num_docs)
        if self.max_num_docs is not None:
            order = order[: int(self.max_num_docs)]
        ranked = scores[order]
        threshold = (
            float(self.similarity_threshold) if self.similarity_threshold is not None
            else float(ranked[0]) - float(self.similarity_threshold_offset or 0.0)
        )
        keep = order[ranked > threshold]
        bound = "max_num_docs" if capped and len(keep) == len(order) else "threshold"
        min_docs = int(getattr(self, "min_num_docs_", None) or self.min_num_docs or 1)
        if len(keep) < min_docs:
            keep = order[:min_docs]
            bound = "min_num_docs"
        return keep, scores[keep], bound

    def _clean(self, vectors: np.ndarray) -> np.ndarray:
        """Local-outlier-factor mask of the inliers (all True when there are too few vectors)."""
        if len(vectors) < 3:
            return np.ones(len(vectors), dtype=bool)
        from sklearn.neighbors import LocalOutlierFactor

        lof = LocalOutlierFactor(n_neighbors=min(20, len(vectors) - 1))
        return lof.fit_predict(vectors) == 1

    def _resolve_min_num_docs(self, n_documents: int) -> int:
        """``min_num_docs`` as a number: :func:`auto_min_num_docs` of the documents (``fit``'s, extra
        documents aside) for ``"auto"``, within ``max_num_docs``."""
        if isinstance(self.min_num_docs, str) and self.min_num_docs == "auto":
            n = auto_min_num_docs(n_documents, len(self.keyword_vectors_))
            return min(n, int(self.max_num_docs)) if self.max_num_docs is not None else n
        return int(self.min_num_docs or 1)

    def _fit_labels(self, pool: np.ndarray) -> None:
        #: the number of documents ``min_num_docs`` stood for in this fit (``"auto"`` resolved)
        self.min_num_docs_ = self._resolve_min_num_docs(len(getattr(self, "doc_vectors_", pool)))
        centroids = self.keyword_vectors_
        pool_unit = unit(pool)
        label_vectors, indices, scores, bounds = [], [], [], []
        for c in centroids:
            idx, sc, bound = self._select(c, pool_unit)
            if self.clean_outliers:
                mask = self._clean(pool[idx])
                idx, sc = idx[mask], sc[mask]
            label_vectors.append(pool[idx].mean(axis=0))
            indices.append(idx.astype(np.int64))
            scores.append(sc.astype(np.float32))
            bounds.append(bound)
        label_vectors = np.stack(label_vectors).astype(np.float32)
        self._check_collapse(label_vectors, label_vectors - pool.mean(axis=0), indices, bounds, len(pool))
        self.label_vectors_ = label_vectors
        self.label_doc_indices_ = indices
        self.label_doc_scores_ = scores

    def _check_collapse(self, label_vectors: np.ndarray, centred: np.ndarray, indices: list[np.ndarray],
                        bounds: list[str], n_pool: int) -> None:
        """Raise :class:`LabelCollapseError` if two labels were built from (nearly) the same documents.

        ``centred``: the label vectors minus the mean of the candidate documents (used for the
        cosine test); the message reports the cosine of the label vectors themselves."""
        n = len(centred)
        if n < 2:
            return
        sims = cosine(centred, centred)
        raw = cosine(label_vectors, label_vectors)
        sets = [set(i.tolist()) for i in indices]
        pairs = []
        for a in range(n):
            for b in range(a + 1, n):
                union = len(sets[a] | sets[b])
                jac = len(sets[a] & sets[b]) / union if union else 1.0
                if jac > COLLAPSE_JACCARD or sims[a, b] > COLLAPSE_COSINE:
                    pairs.append((a, b, jac, float(raw[a, b])))
        if not pairs:
            return
        # group the collapsed labels (connected components of the collapsed pairs)
        group_of = list(range(n))

        def find(i):
            while group_of[i] != i:
                i = group_of[i]
            return i

        for a, b, _, _ in pairs:
            group_of[find(b)] = find(a)
        groups: dict[int, list[int]] = {}
        for a, b, _, _ in pairs:
            for i in (a, b):
                members = groups.setdefault(find(i), [])
                if i not in members:
                    members.append(i)
        worst = max(groups.values(), key=len)
        worst.sort()
        jac = min(p[2] for p in pairs if p[0] in worst and p[1] in worst)
        cos = min(p[3] for p in pairs if p[0] in worst and p[1] in worst)
        names = ", ".join(repr(self.label_names_[i]) for i in worst)
        sizes = sorted({len(indices[i]) for i in worst})
        size_text = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        why = {bounds[i] for i in worst}
        fixes = []
        if "threshold" in why or "max_num_docs" in why:
            if self.similarity_threshold is not None:
                fixes.append(f"raise similarity_threshold (now {float(self.similarity_threshold):g})")
            else:
                fixes.append(f"lower similarity_threshold_offset (now {float(self.similarity_threshold_offset or 0):g})")
            fixes.append("lower max_num_docs" + (f" (now {self.max_num_docs})" if self.max_num_docs is not None
                                                 else " (now unlimited)"))
        if "min_num_docs" in why and self.min_num_docs_ > 1:
            now = (f"auto = {self.min_num_docs_}" if isinstance(self.min_num_docs, str) else str(self.min_num_docs))
            fixes.insert(0, f"lower min_num_docs (now {now})")
        fixes.append("give these labels more distinct keywords")
        more = f" ({len(groups)} groups of collapsed labels)" if len(groups) > 1 else ""
        raise LabelCollapseError(
            f"labels {names} collapsed: their label vectors were built from nearly the same {size_text} of "
            f"{n_pool} documents (Jaccard {jac:.2f}, cosine {cos:.3f}), so they cannot be told apart{more}; "
            f"{', '.join(fixes[:-1]) + ' or ' if len(fixes) > 1 else ''}{fixes[-1]}"
        )

    def _resolve_keywords(self) -> None:
        self.label_names_, self.keywords_, self.display_names_ = normalise_keywords(
            self.keywords, self.label_names, getattr(self, "display_names", None))

    # -- prediction
    def training_scores(self) -> np.ndarray:
        """Cosine similarity of every training document (``fit``'s ``documents``) to every label,
        shape ``(n_documents, n_labels)``, from the stored document vectors (no inference)."""
        self._check_fitted()
        return cosine(self.doc_vectors_, self.label_vectors_)

    def decision_function(self, documents: Sequence[str]) -> np.ndarray:
        """Cosine similarity of new documents to every label, shape ``(n, n_labels)``."""
        self._check_fitted()
        docs = check_documents(documents)
        return cosine(self._embed_new(docs), self.label_vectors_)

    def predict(self, documents: Sequence[str] | None = None) -> np.ndarray:
        """The most similar label of each document (``None``: the training documents)."""
        scores = self.training_scores() if documents is None else self.decision_function(documents)
        return np.asarray(self.label_names_, dtype=object)[scores.argmax(axis=1)]

    def score_labels(self, y_true: Sequence[str], documents: Sequence[str] | None = None) -> dict:
        """Macro-F1, accuracy, per-label precision/recall/F1 and ROC AUC of the predictions for
        ``documents`` (``None``: the training documents) against ``y_true``; see
        :func:`embedkit.topics.score_labels`."""
        from embedkit.topics.scoring import score_labels

        scores = self.training_scores() if documents is None else self.decision_function(documents)
        pred = np.asarray(self.label_names_, dtype=object)[scores.argmax(axis=1)]
        return score_labels(y_true, pred, self.label_names_, scores=scores)

    def label_index(self, label: str) -> int:
        """Column of ``label`` in the score matrices; a display name (e.g. ``Sports``) is accepted too."""
        self._check_fitted()
        label = str(label)
        if label in self.label_names_:
            return self.label_names_.index(label)
        shown = list(getattr(self, "display_names_", None) or self.label_names_)
        if label in shown:
            return shown.index(label)
        folded = [i for i, (n, d) in enumerate(zip(self.label_names_, shown))
                  if label.casefold() in (n.casefold(), d.casefold())]
        if len(folded) == 1:
            return folded[0]
        known = ", ".join(repr(n) if n == d else f"{n!r} ({d})" for n, d in zip(self.label_names_, shown))
        raise EmbedkitError(f"unknown label {label!r}; the model knows: {known}")

    def search(self, label: str, k: int = 10) -> list[tuple[float, int]] | list[tuple[int, float]]:
        """The ``k`` training documents most similar to ``label``: ``[(document index, cosine)]``, best first."""
        from embedkit.validation import check_positive_int

        j = self.label_index(label)
        k = check_positive_int(k, "k")
        scores = self.training_scores()[:, j]
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(i), float(scores[i])) for i in top]

    # -- persistence (shared part)
    def _common_manifest(self) -> dict:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "kind": self._kind,
            "label_names": self.label_names_, "display_names": list(self.display_names_),
            "keywords": self.keywords_, "keywords_used": self.keywords_used_,
            "unknown_keywords": self.unknown_keywords_, "n_documents": int(len(self.doc_vectors_)),
            "n_candidates": int(self.n_candidates_),
        }

    def _write_folder(self, path: str | os.PathLike, overwrite: bool, params: dict, extra: dict, write_more=None):
        """Check ``path`` (:func:`~embedkit._io.prepare_output`), then write the folder atomically."""
        target = prepare_output(path, OUTPUT_KIND, overwrite=overwrite)
        with atomic_directory(target) as tmp:
            if write_more is not None:
                write_more(tmp)
            offsets = np.cumsum([0] + [len(i) for i in self.label_doc_indices_]).astype(np.int64)
            atomic_save_npz(
                tmp / "vectors.npz",
                label_vectors=self.label_vectors_, keyword_vectors=self.keyword_vectors_,
                doc_vectors=self.doc_vectors_, label_doc_indices=np.concatenate(self.label_doc_indices_),
                label_doc_scores=np.concatenate(self.label_doc_scores_), label_doc_offsets=offsets,
            )
            if self.documents_ is not None:
                atomic_write_json(tmp / "documents.json", self.documents_)
            atomic_write_json(tmp / MANIFEST, {**self._common_manifest(), "params": params, **extra})
            mark_output(tmp, OUTPUT_KIND)
        logger.info("saved %s Lbl2Vec model to %s", self._kind, target)
        return target

    def _load_common(self, folder: Path, manifest: dict) -> None:
        try:
            arrays = load_npz(folder / "vectors.npz")
            self.label_vectors_ = arrays["label_vectors"]
            self.keyword_vectors_ = arrays["keyword_vectors"]
            self.doc_vectors_ = arrays["doc_vectors"]
            off = arrays["label_doc_offsets"]
            self.label_doc_indices_ = [arrays["label_doc_indices"][a:b] for a, b in zip(off[:-1], off[1:])]
            self.label_doc_scores_ = [arrays["label_doc_scores"][a:b] for a, b in zip(off[:-1], off[1:])]
        except (OSError, KeyError, ValueError) as e:
            raise DataFormatError(f"{folder}: vectors.npz is missing or damaged ({e})") from e
        try:
            self.label_names_ = [str(n) for n in manifest["label_names"]]
            self.display_names_ = [str(n) for n in manifest.get("display_names") or self.label_names_]
            self.keywords_ = [list(k) for k in manifest["keywords"]]
            self.keywords_used_ = [list(k) for k in manifest["keywords_used"]]
            self.unknown_keywords_ = dict(manifest["unknown_keywords"])
            self.n_candidates_ = int(manifest["n_candidates"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(f"{folder / MANIFEST}: missing or malformed entry ({e})") from None
        docs_path = folder / "documents.json"
        try:
            self.documents_ = json.loads(docs_path.read_text(encoding="utf-8")) if docs_path.exists() else None
        except (OSError, ValueError) as e:
            raise DataFormatError(f"{docs_path}: damaged ({e})") from None
        if self.label_vectors_.shape[0] != len(self.label_names_) or len(self.display_names_) != len(self.label_names_):
            raise DataFormatError(f"{folder}: {self.label_vectors_.shape[0]} label vectors for {len(self.label_names_)} labels")


def read_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    """Check that ``path`` is a saved Lbl2Vec folder; return (folder, its ``lbl2vec.json``).

    A folder left half-swapped by a killed save is restored first (:func:`embedkit._io.recover_directory`).
    """
    from embedkit._io import recover_directory

    folder = Path(path)
    recover_directory(folder)
    if not folder.is_dir():
        raise EmbedkitError(f"no Lbl2Vec model folder at {str(path)!r}")
    mp = folder / MANIFEST
    try:
        if mp.stat().st_size > (64 << 20):
            raise DataFormatError(f"{mp}: implausibly large for a manifest")
        manifest = json.loads(mp.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"{folder}: not an embedkit Lbl2Vec model ({MANIFEST} is missing)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(f"{mp}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DataFormatError(f"{mp}: not an embedkit Lbl2Vec manifest")
    if manifest.get("format") != FORMAT:
        raise DataFormatError(f"{mp}: format {manifest.get('format')!r} is not {FORMAT!r}")
    try:
        version = int(manifest.get("version", 0))
    except (TypeError, ValueError):
        raise DataFormatError(f"{mp}: bad format version {manifest.get('version')!r}") from None
    if version > FORMAT_VERSION:
        raise DataFormatError(f"{mp}: format version {version} is newer than this embedkit reads")
    return folder, manifest
