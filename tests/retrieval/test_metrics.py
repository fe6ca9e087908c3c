import numpy as np
import pytest

from embedkit.retrieval.metrics import mrr_at_k, ndcg_at_k, recall_at_k


def random_run(seed=0, nq=40, nd=300):
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for q in range(nq):
        docs = rng.choice(nd, 150, replace=False)
        # coarse scores create ties, which exercise the tie-breaking rule
        run[f"q{q}"] = {f"d{d}": float(np.round(rng.random(), 2)) for d in docs}
        rel = rng.choice(nd, rng.integers(1, 6), replace=False)
        qrels[f"q{q}"] = {f"d{d}": int(rng.integers(1, 3)) for d in rel}
    return run, qrels


def test_same_as_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")  # installed with mteb
    run, qrels = random_run()
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recip_rank"})
    res = ev.evaluate(run)
    ndcg = np.mean([r["ndcg_cut_10"] for r in res.values()])
    recall = np.mean([r["recall_100"] for r in res.values()])
    assert ndcg_at_k(run, qrels, 10) == pytest.approx(ndcg, abs=1e-9)
    assert recall_at_k(run, qrels, 100) == pytest.approx(recall, abs=1e-9)
    # MRR@10 = reciprocal rank cut at 10: pytrec's recip_rank on the run truncated to the top 10
    top10 = {q: dict(sorted(s.items(), key=lambda x: (x[1], x[0]), reverse=True)[:10]) for q, s in run.items()}
    rr = np.mean([r["recip_rank"] for r in ev.evaluate(top10).values()])
    assert mrr_at_k(run, qrels, 10) == pytest.approx(rr, abs=1e-9)


def test_known_values():
    qrels = {"q": {"a": 1, "b": 1}}
    run = {"q": {"x": 3.0, "a": 2.0, "b": 1.0}}
    ideal = 1 + 1 / np.log2(3)
    assert ndcg_at_k(run, qrels, 10) == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal)
    assert mrr_at_k(run, qrels, 10) == pytest.approx(0.5)
    assert recall_at_k(run, qrels, 2) == pytest.approx(0.5)
    assert ndcg_at_k({}, qrels, 10) == 0.0
