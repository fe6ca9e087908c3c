from __future__ import annotations

import numpy as np
import pickle
import torch

from embedkit.training.samplers import (GuidedBatchSampler, batch_stats, gsimclr_batch_sampler, guided_batches,
                                        pseudo_labels)


def test_balanced_clusters_never_repeat():
    k = 8
    labels = np.repeat(np.arange(k), 10)
    np.random.default_rng(0).shuffle(labels)
    batches = guided_batches(labels, k, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 10
    for b in batches:
        assert len(set(labels[b].tolist())) == k
    assert sorted(i for b in batches for i in b) == list(range(len(labels)))
    assert batch_stats(batches, labels)["no_repeat_fraction"] == 1.0


def test_unbalanced_clusters_clean_while_clusters_last():
    k = 4
    sizes = [3, 5, 9, 12]  # smallest cluster lasts 3 rounds
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    batches = guided_batches(labels, k, generator=torch.Generator().manual_seed(1), shuffle_batches=False)
    for b in batches[: min(sizes)]:
        assert len(set(labels[b].tolist())) == k  # one per cluster while all clusters last
    stats = batch_stats(batches, labels)
    assert stats["no_repeat_batches"] >= min(sizes)
    assert stats["no_repeat_fraction"] < 1.0  # afterwards repeats are unavoidable (K = batch size)


def test_sampler_contract_and_determinism():
    labels = np.repeat(np.arange(4), 8)
    ds = list(range(len(labels)))
    s = GuidedBatchSampler(ds, 4, True, generator=torch.Generator(), seed=3, labels=labels)
    first = list(s)
    assert len(first) == len(s) == 8
    assert s.stats["no_repeat_fraction"] == 1.0
    assert list(s) == first  # same seed and epoch -> same batches (resume replays them)
    s.set_epoch(1)
    assert list(s) != first
    factory = pickle.loads(pickle.dumps(gsimclr_batch_sampler(labels)))
    assert isinstance(factory(ds, 4, True, None, torch.Generator(), 0), GuidedBatchSampler)


def test_pseudo_labels_tfidf_k_equals_batch():
    texts = [f"cat dog pet animal {i}" for i in range(20)] + [f"stock market price trade {i}" for i in range(20)]
    lab = pseudo_labels(texts, 2, method="tfidf", seed=0)
    assert len(set(lab[:20])) == 1 and len(set(lab[20:])) == 1 and lab[0] != lab[20]


def test_pseudo_labels_encoder(tiny_model, isolated_cache):
    lab = pseudo_labels(["the cat", "a dog", "stock price", "python code", "he she"], 3, model=tiny_model)
    assert lab.shape == (5,) and set(lab) <= {0, 1, 2}
