"""G-SimCLR guided batching (Chakraborty et al., ICDM-W 2020), for text and any loss.

G-SimCLR clusters the training data with a cheap encoder, with K = batch size clusters, and orders
the data so that each batch holds one item per cluster: in-batch negatives then rarely share a
topic with the anchor (fewer false negatives). The reference notebooks rank items within their
cluster and sort by rank (round-robin over clusters), then draw batches in order.

Here:

* :func:`pseudo_labels` -- k-means (scikit-learn, K = batch size) on embeddings of the starting
  encoder (``method="encoder"``) or on TF-IDF + truncated SVD (``method="tfidf"``, no model);
* :class:`GuidedBatchSampler` -- a ``DefaultBatchSampler`` subclass: every epoch it shuffles each
  cluster, emits rounds of one item per non-exhausted cluster (cluster order shuffled per round),
  cuts that stream into batches, and shuffles the order of the batches (deviation: the reference
  draws batches in stream order; shuffling spreads the batches built after small clusters run out
  over the epoch instead of leaving them all at its end). The batch composition is unchanged.
  Once a cluster is exhausted a batch can no longer hold every cluster, and repeats appear; the
  sampler reports how often a batch had no repeated cluster (:attr:`GuidedBatchSampler.stats`).
* :class:`gsimclr_batch_sampler` -- a picklable factory to pass as
  ``SentenceTransformerTrainingArguments(batch_sampler=gsimclr_batch_sampler(labels))``.

Multi-process training: :class:`GlobalBatchSplitter` makes any batch sampler distributed-aware.
:class:`~embedkit.training.trainer.EmbedkitTrainer` builds the sampler at the *global* batch size
(per-process batch x number of processes) and the splitter cuts every global batch into one
disjoint slice per rank, in the order in which accelerate deals batches to ranks (batch ``i`` to
rank ``i % world_size``). So the global batch is what is cluster-distinct (G-SimCLR) or free of
duplicates (``no_duplicates``), every rank runs the same number of steps, and 2 processes x batch B
see exactly the batches of 1 process x batch 2B. Pseudo-labels should then be computed with K = the
global batch size; :class:`GuidedBatchSampler` takes rank 0's labels on every rank.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

from embedkit.errors import EmbedkitError

logger = logging.getLogger(__name__)

__all__ = ["GlobalBatchSplitter", "GuidedBatchSampler", "batch_stats", "gsimclr_batch_sampler", "guided_batches",
           "pseudo_labels"]


def pseudo_labels(texts: Sequence[str], n_clusters: int, *, method: str = "encoder", model=None, seed: int = 0,
                  svd_dim: int = 128, batch_size: int = 128, show_progress: bool = False) -> np.ndarray:
    """Cluster ids (0..n_clusters-1) of ``texts`` by k-means on cheap embeddings.

    Args:
        method: ``"encoder"`` (embeddings of ``model``, cached by embedkit) or ``"tfidf"``
            (TF-IDF + truncated SVD to ``svd_dim`` dimensions, L2-normalised).
        model: the encoder for ``method="encoder"`` (e.g. the model about to be trained).
    """
    from sklearn.cluster import KMeans

    if n_clusters < 1 or n_clusters > len(texts):
        raise EmbedkitError(f"n_clusters={n_clusters} must be between 1 and the number of texts ({len(texts)})")
    if method == "encoder":
        if model is None:
            raise EmbedkitError("pseudo_labels(method='encoder') needs a model")
        from embedkit.cache import encode_cached

        x = np.asarray(encode_cached(model, list(texts), batch_size=batch_size, show_progress=show_progress,
                                     desc="G-SimCLR embeddings"), dtype=np.float32)
    elif method == "tfidf":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        tf = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=50000).fit_transform(texts)
        dim = max(1, min(svd_dim, tf.shape[1] - 1))
        x = TruncatedSVD(dim, random_state=seed).fit_transform(tf).astype(np.float32)
    else:
        raise EmbedkitError(f"unknown pseudo-label method {method!r}; choose 'encoder' or 'tfidf'")
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1)
    return km.fit_predict(x).astype(np.int64)


def guided_batches(labels: Sequence[int], batch_size: int, *, generator: torch.Generator | None = None,
                   drop_last: bool = False, shuffle_batches: bool = True) -> list[list[int]]:
    """Round-robin batches over clusters (see the module docstring); returns lists of row indices."""
    labels = np.asarray(labels)
    clusters = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = torch.randperm(len(idx), generator=generator).numpy()
        clusters[int(c)] = list(idx[perm])
    stream: list[int] = []
    rank = 0
    order = list(clusters)
    while True:
        alive = [c for c in order if rank < len(clusters[c])]
        if not alive:
            break
        shuffled = [alive[i] for i in torch.randperm(len(alive), generator=generator).tolist()]
        stream.extend(int(clusters[c][rank]) for c in shuffled)
        rank += 1
    batches = [stream[i:i + batch_size] for i in range(0, len(stream), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle_batches and len(batches) > 1:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def batch_stats(batches: Sequence[Sequence[int]], labels: Sequence[int]) -> dict[str, float]:
    """How often a batch had no repeated cluster, and the mean share of distinct clusters per batch."""
    labels = np.asarray(labels)
    if not batches:
        return {"batches": 0, "no_repeat_fraction": float("nan"), "mean_distinct_fraction": float("nan")}
    clean, distinct = 0, []
    for b in batches:
        n_distinct = len(set(labels[list(b)].tolist()))
        clean += n_distinct == len(b)
        distinct.append(n_distinct / len(b))
    return {"batches": len(batches), "no_repeat_batches": clean, "no_repeat_fraction": clean / len(batches),
            "mean_distinct_fraction": float(np.mean(distinct))}


class GuidedBatchSampler(DefaultBatchSampler):
    """G-SimCLR batch sampler: one item per pseudo-label cluster per batch while clusters last.

    Args:
        dataset: the training dataset (row i has pseudo-label ``labels[i]``).
        labels: cluster id per row, e.g. from :func:`pseudo_labels` with K = ``batch_size``.
        shuffle_batches: shuffle the order of the built batches each epoch (default True).

    Attributes:
        stats: after each ``__iter__``: ``{"batches", "no_repeat_batches", "no_repeat_fraction",
            "mean_distinct_fraction"}`` for that epoch.
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: torch.Generator | None = None, seed: int = 0, *, labels: Sequence[int] | None = None,
                 shuffle_batches: bool = True) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns,
                         generator=generator, seed=seed)
        if labels is None:
            raise EmbedkitError("GuidedBatchSampler needs pseudo-labels (labels=...), one per training row")
        self.labels = _labels_of_rank0(np.asarray(labels))
        if len(self.labels) != len(dataset):
            raise EmbedkitError(f"GuidedBatchSampler: {len(self.labels)} labels for {len(dataset)} training rows")
        k = len(np.unique(self.labels))
        if k < batch_size:
            logger.warning("G-SimCLR: %d clusters for batches of %d (the global batch under multi-process "
                           "training): every batch repeats clusters; compute pseudo-labels with K = %d",
                           k, batch_size, batch_size)
        self.shuffle_batches = shuffle_batches
        self.stats: dict[str, Any] = {}

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        gen = self.generator if self.generator is not None else torch.Generator()
        gen.manual_seed(int(self.seed or 0) + int(self.epoch))
        batches = guided_batches(self.labels, self.batch_size, generator=gen, drop_last=self.drop_last,
                                 shuffle_batches=self.shuffle_batches)
        self.stats = batch_stats(batches, self.labels)
        yield from batches


class gsimclr_batch_sampler:  # noqa: N801 - used like a class by the trainer
    """Picklable factory: ``SentenceTransformerTrainingArguments(batch_sampler=gsimclr_batch_sampler(labels))``.

    The trainer calls it with ``(dataset, batch_size, drop_last, valid_label_columns, generator,
    seed)``; the last sampler built is kept in :attr:`sampler` (for its :attr:`~GuidedBatchSampler.stats`).
    """

    def __init__(self, labels: Sequence[int], shuffle_batches: bool = True) -> None:
        self.labels = np.asarray(labels)
        self.shuffle_batches = shuffle_batches
        self.sampler: GuidedBatchSampler | None = None

    def __call__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        self.sampler = GuidedBatchSampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed,
                                          labels=self.labels, shuffle_batches=self.shuffle_batches)
        return self.sampler

    def __getstate__(self):  # training_args.bin pickles the arguments; keep it light
        return {"labels": self.labels, "shuffle_batches": self.shuffle_batches, "sampler": None}

    def __repr__(self) -> str:
        return f"gsimclr_batch_sampler(n={len(self.labels)}, k={len(np.unique(self.labels))})"


def _labels_of_rank0(labels: np.ndarray) -> np.ndarray:
    """Rank 0's pseudo-labels on every rank (k-means may differ across devices); unchanged in one process."""
    from embedkit.training import distributed

    if not distributed.is_distributed():
        return labels
    import torch.distributed as dist

    box = [labels if distributed.rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return np.asarray(box[0])


class GlobalBatchSplitter:
    """Cut every batch of ``inner`` (a *global* batch) into ``num_replicas`` consecutive slices.

    With accelerate's sharding (batch ``i`` goes to rank ``i % num_replicas``), rank ``r`` receives
    slice ``r`` of every global batch: disjoint slices, the same number of steps on every rank. A
    global batch that cannot give every rank a non-empty slice is dropped (and, with ``drop_last``,
    an incomplete one).

    Args:
        inner: a batch sampler yielding global batches (``batch_size`` = per-rank batch x ``num_replicas``).
        num_replicas: the number of ranks.

    Example:
        >>> splitter = GlobalBatchSplitter([[0, 1, 2, 3], [4, 5, 6, 7]], 2)
        >>> list(splitter)
        [[0, 1], [2, 3], [4, 5], [6, 7]]
    """

    def __init__(self, inner, num_replicas: int) -> None:
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise EmbedkitError(f"num_replicas must be a whole number >= 1, got {num_replicas!r}")
        self.inner = inner
        self.num_replicas = num_replicas
        inner_bs = getattr(inner, "batch_size", None)
        self.batch_size = None if inner_bs is None else max(1, inner_bs // num_replicas)
        self.drop_last = bool(getattr(inner, "drop_last", False))
        self.epoch = 0

    @property
    def sampler(self):
        """The inner batch sampler's index sampler (accelerate swaps in its seedable sampler here)."""
        return getattr(self.inner, "sampler", None)

    @sampler.setter
    def sampler(self, value) -> None:
        if hasattr(self.inner, "sampler"):
            self.inner.sampler = value

    @property
    def stats(self):
        return getattr(self.inner, "stats", None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner) * self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        w = self.num_replicas
        full = None if self.batch_size is None else self.batch_size * w
        for batch in self.inner:
            batch = list(batch)
            if len(batch) < w or (self.drop_last and full is not None and len(batch) < full):
                continue
            if full is not None and len(batch) == full:
                yield from (batch[i * self.batch_size:(i + 1) * self.batch_size] for i in range(w))
            else:
                yield from (part.tolist() for part in np.array_split(np.asarray(batch), w))
