from __future__ import annotations

import pickle

import numpy as np
import torch

from embedkit.training.samplers import (
    GuidedBatchSampler,
    batch_stats,
    gsimclr_batch_sampler,
    guided_batches,
    pseudo_labels,
)


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


TOPIC_WORDS = {
    "animals": "cat dog bird fish horse cow mouse animal pet kitten puppy".split(),
    "money": "stock price market bank money trade rate economy company profit fund dollar euro".split(),
    "code": "python code program function list dict loop class error bug file index query vector".split(),
    "people": "he she him her his man woman king queen boy girl father mother doctor nurse".split(),
}


def _topic_texts(n_per_topic=12, seed=0):
    rng = np.random.default_rng(seed)
    texts, topics = [], []
    for _i in range(n_per_topic):
        for t, words in TOPIC_WORDS.items():
            texts.append(" ".join(rng.choice(words, 8)))
            topics.append(t)
    return texts, np.array(topics)


def test_pseudo_labels_tfidf_recover_planted_topics():
    from sklearn.metrics import adjusted_rand_score

    texts, topics = _topic_texts()
    lab = pseudo_labels(texts, len(TOPIC_WORDS), method="tfidf", seed=0)
    assert lab.shape == (len(texts),) and set(lab) == set(range(len(TOPIC_WORDS)))
    assert adjusted_rand_score(topics, lab) == 1.0  # one cluster per planted topic


def test_pseudo_labels_encoder_clusters_the_encoder_embeddings(tiny_model, monkeypatch):
    """method="encoder" runs k-means on the model's embeddings: planted clusters in the embedding
    space (a random tiny model has none) must come back as the pseudo-labels."""
    from sklearn.metrics import adjusted_rand_score

    import embedkit.cache

    texts, topics = _topic_texts()
    names = sorted(TOPIC_WORDS)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(names), 32)) * 5
    planted = np.stack([centres[names.index(t)] + rng.normal(size=32) * 0.3 for t in topics]).astype(np.float32)
    seen = {}

    def fake_encode(model, batch, **kw):
        seen["model"] = model
        return planted[[texts.index(t) for t in batch]]

    monkeypatch.setattr(embedkit.cache, "encode_cached", fake_encode)
    lab = pseudo_labels(texts, len(names), method="encoder", model=tiny_model, seed=0)
    assert seen["model"] is tiny_model
    assert adjusted_rand_score(topics, lab) == 1.0


def test_gsimclr_batches_hold_one_text_per_topic():
    """The G-SimCLR property end to end: pseudo-labels with K = batch size, then every batch has one
    text of each planted topic, so no in-batch negative shares the anchor's topic."""
    texts, topics = _topic_texts()
    k = len(TOPIC_WORDS)
    labels = pseudo_labels(texts, k, method="tfidf", seed=0)
    sampler = gsimclr_batch_sampler(labels)(list(range(len(texts))), k, True, None, torch.Generator(), 5)
    batches = list(sampler)
    assert len(batches) == len(texts) // k
    for b in batches:
        assert sorted(topics[b].tolist()) == sorted(TOPIC_WORDS)
    assert sampler.stats["no_repeat_fraction"] == 1.0
    # a plain random batching of the same data repeats topics (what G-SimCLR avoids)
    perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(5)).tolist()
    rand = [perm[i:i + k] for i in range(0, len(perm), k)]
    assert batch_stats(rand, topics)["no_repeat_fraction"] < 0.5


def _shard(batches, world, r):
    """What accelerate's DDP data loader gives rank r (batch i -> rank i % world, drop_last)."""
    from accelerate.data_loader import BatchSamplerShard

    return list(BatchSamplerShard(batches, num_processes=world, process_index=r, split_batches=False,
                                  even_batches=False))


def test_gsimclr_global_batch_across_two_ranks_repeats_no_cluster():
    from embedkit.training.samplers import GlobalBatchSplitter

    world, per_rank = 2, 4
    k = world * per_rank  # K = global batch size
    labels = np.repeat(np.arange(k), 6)
    np.random.default_rng(1).shuffle(labels)
    ds = list(range(len(labels)))
    inner = GuidedBatchSampler(ds, k, True, generator=torch.Generator(), seed=0, labels=labels)
    splitter = GlobalBatchSplitter(inner, world)
    ranks = [_shard(splitter, world, r) for r in range(world)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # the same number of steps on every rank
    seen = []
    for step in range(6):
        a, b = ranks[0][step], ranks[1][step]
        assert len(a) == len(b) == per_rank and not set(a) & set(b)  # disjoint slices
        assert len(set(labels[a + b].tolist())) == k  # the global batch: no repeated cluster
        seen += a + b
    assert sorted(seen) == ds
    splitter.set_epoch(1)  # reaches the inner sampler
    assert inner.epoch == 1 and _shard(splitter, world, 0) != ranks[0]


def test_global_batch_splitter_keeps_the_one_process_batches_and_equal_steps():
    from embedkit.training.samplers import GlobalBatchSplitter

    batches = [list(range(i, i + 8)) for i in range(0, 40, 8)] + [[40, 41, 42]]  # last one incomplete
    inner = type("Inner", (), {"batch_size": 8, "drop_last": True, "__iter__": lambda self: iter(batches),
                               "__len__": lambda self: 5})()
    s = GlobalBatchSplitter(inner, 2)
    assert s.batch_size == 4 and len(s) == 10
    r0, r1 = _shard(s, 2, 0), _shard(s, 2, 1)
    assert len(r0) == len(r1) == 5
    assert [a + b for a, b in zip(r0, r1)] == batches[:5]  # rank slices rebuild the 1-process batches
