"""Quality on a small real subset of SciFact with the default model (fast with a warm or cold cache)."""

import pytest

from embedkit import EmbeddingIndex
from embedkit.cache import encode_cached
from embedkit.data import read_beir
from embedkit.evaluation.retrieval import run_from_search
from embedkit.retrieval.metrics import ndcg_at_k

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subset(data_dir, default_model):
    ds = read_beir(data_dir / "retrieval" / "scifact")
    qids = sorted(ds.qrels)[:40]
    relevant = sorted({d for q in qids for d in ds.qrels[q]})
    others = [d for d in ds.corpus if d not in set(relevant)][: 260 - len(relevant)]
    doc_ids = relevant + others
    texts = [(ds.corpus[d]["title"] + " " + ds.corpus[d]["text"]).strip() for d in doc_ids]
    D = encode_cached(default_model, texts, show_progress=False)
    Q = encode_cached(default_model, [ds.queries[q] for q in qids], show_progress=False)
    return doc_ids, texts, D, qids, Q, {q: ds.qrels[q] for q in qids}


def ndcg(index, qids, Q, qrels):
    scores, ids = index.search_ids(Q, 100)
    return ndcg_at_k(run_from_search(qids, ids, scores), qrels, 10)


def test_float_equals_sentence_transformers_semantic_search(subset, default_model):
    from sentence_transformers.util import semantic_search

    doc_ids, texts, D, qids, Q, qrels = subset
    idx = EmbeddingIndex.build(texts, doc_ids, model=default_model, embeddings=D)
    hits = semantic_search(Q, D, top_k=100)
    anchor = {q: {doc_ids[h["corpus_id"]]: h["score"] for h in hs} for q, hs in zip(qids, hits)}
    assert ndcg(idx, qids, Q, qrels) == pytest.approx(ndcg_at_k(anchor, qrels, 10), abs=1e-4)


def test_compressed_indexes_keep_quality(subset, default_model):
    doc_ids, texts, D, qids, Q, qrels = subset
    scores = {}
    for spec, rescore in (("float", None), ("int8", None), ("binary", None), ("binary", 4), ("mrl:128,binary", 4)):
        idx = EmbeddingIndex.build(texts, doc_ids, model=default_model, spec=spec, rescore=rescore, embeddings=D)
        scores[(spec, rescore)] = ndcg(idx, qids, Q, qrels)
    f = scores[("float", None)]
    assert f > 0.5
    assert scores[("int8", None)] >= 0.98 * f
    assert scores[("binary", 4)] >= 0.97 * f
    assert scores[("binary", 4)] >= scores[("binary", None)]
    assert scores[("mrl:128,binary", 4)] >= 0.9 * f
