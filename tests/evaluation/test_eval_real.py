"""Default model on real-data subsets: mteb's scores through embedkit equal independent computations."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # the default model and the real data

def test_sts_subset_equals_scipy(default_model, data_dir):
    from embedkit.data import read_sts_tsv
    from embedkit.evaluation.mteb_tasks import sts_task
    from embedkit.evaluation.sts import spearman_cosine
    from embedkit.evaluation.suite import run_suite

    path = data_dir / "sts" / "stsb.test.tsv"
    res = run_suite(default_model, [sts_task(path, max_rows=200)], "float", show_progress=False)
    ds = read_sts_tsv(path)
    from embedkit.cache import encode_cached

    e1 = encode_cached(default_model, ds.sentences1[:200], show_progress=False)
    e2 = encode_cached(default_model, ds.sentences2[:200], show_progress=False)
    assert abs(100 * res["rows"][0]["main_score"] - spearman_cosine(e1, e2, ds.scores[:200])) < 1e-4


def test_scifact_subset_equals_index_eval(default_model, data_dir):
    """nDCG@10 of mteb on 30 queries x 300 documents equals embedkit's float index eval on the same subset."""
    from embedkit.evaluation.mteb_tasks import retrieval_task
    from embedkit.evaluation.retrieval import evaluate_index
    from embedkit.evaluation.suite import run_suite
    from embedkit.retrieval.index import EmbeddingIndex

    folder = data_dir / "retrieval" / "scifact"
    task = retrieval_task(folder, max_queries=30, max_docs=300)
    task.load_data()
    split = task.dataset["default"]["test"]
    corpus, queries, qrels = split["corpus"], split["queries"], split["relevant_docs"]
    texts = [(t + " " + x).strip() for t, x in zip(corpus["title"], corpus["text"])]
    index = EmbeddingIndex.build(texts, list(corpus["id"]), model=default_model, spec="float", show_progress=False)
    expected = evaluate_index(index, dict(zip(queries["id"], queries["text"])), qrels)
    task.unload_data()
    res = run_suite(default_model, [task], "float", show_progress=False)
    key = next(k for k in expected if k.lower().startswith("ndcg") and k.endswith("10"))
    assert abs(res["rows"][0]["main_score"] - expected[key]) < 1e-4
