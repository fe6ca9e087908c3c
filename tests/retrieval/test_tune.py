"""Index building by budget (issue 30): byte accounting, candidates within the budget, the label-free quality
metric, the one-line budget errors, and the tuner's figures equal to what the built index does."""

import json

import numpy as np
import pytest

from embedkit.compression.spec import code_bytes_per_vector, quantizer_from_spec
from embedkit.errors import BudgetError, EmbedkitError
from embedkit.retrieval.tune import agreement_at_k, exact_top_k, holdout_split, parse_size, tune, tune_embeddings
from embedkit.retrieval.tune_candidates import Candidate, codec_candidates, model_sizes, structure_bytes


def clustered(n, d=32, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((12, d)).astype(np.float32)
    X = C[rng.integers(0, 12, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.parametrize("spec", ["float", "f16", "int8", "binary", "mrl:16,binary", "mrl:12,binary", "lsh:100",
                                  "itq:24", "pq:8x4", "pq:4x8", "rabitq:1", "rabitq:2", "mrl:16,rabitq:4"])
def test_code_bytes_equal_the_fitted_code_size(spec):
    X = clustered(300)
    assert code_bytes_per_vector(spec, 32) == quantizer_from_spec(spec).fit(X).code_size


def test_bytes_per_vector_add_rescoring_and_structure_exactly():
    c = Candidate(2, 64, "mrl:32,binary", 4, code_bytes_per_vector("mrl:32,binary", 64), 2 * 32)
    assert (c.code_bytes, c.rescore_bytes, c.bytes_per_vector) == (4, 64, 68)
    assert c.with_index("ivf", nprobe=4).bytes_per_vector == 68 + 8
    # HNSW: 2M level-0 links + M/(M-1) upper links of 4 bytes, plus a level (4) and an offset (8)
    assert structure_bytes("hnsw", 8) == round(4 * (16 + 8 / 7)) + 12 == 81
    assert c.with_index("hnsw", hnsw_m=8, ef_search=16).bytes_per_vector == 68 + 81


@pytest.mark.parametrize("budget", [4, 6, 16, 40, 100])
def test_every_candidate_fits_the_budget(budget):
    cands = codec_candidates(2, 64, budget, n_train=400)
    assert cands and all(c.bytes_per_vector <= budget for c in cands)
    assert all(c.code_bytes == code_bytes_per_vector(c.spec, 64) for c in cands)
    assert all(c.rescore_bytes == (0 if not c.rescore else 2 * int(c.spec.split(",")[0].split(":")[1]))
               for c in cands if c.spec.startswith("mrl") or not c.rescore)
    # one member per family: the largest that fits
    if budget == 16:
        assert {"binary", "pq:16x8", "pq:32x4", "lsh:128", "itq:64"} <= {c.spec for c in cands}


def test_ladder_sizes_join_the_full_size():
    assert model_sizes(6, 384, [(1, 32), (3, 128), (6, 384), (9, 999)]) == [(6, 384), (3, 128), (1, 32)]
    assert model_sizes(6, 384, None) == [(6, 384)]


def test_agreement_equals_a_hand_computation():
    truth = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    rows = np.array([[3, 9, 0, -1], [7, 6, 5, 4]])
    # query 1: {0, 3} of 4 found -> 0.5; query 2: all 4 -> 1.0
    assert agreement_at_k(rows, truth, k=4) == pytest.approx(0.75)
    X, Q = clustered(50), clustered(5, seed=3)
    manual = np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(exact_top_k(X, Q, 10), manual)


def test_holdout_split_is_disjoint():
    docs, queries = holdout_split(500, n_queries=40, max_docs=300)
    assert len(queries) == 40 and len(docs) == 300 and not set(docs) & set(queries)
    with pytest.raises(EmbedkitError, match="the corpus has 10 documents; tuning needs at least 20"):
        holdout_split(10)


@pytest.fixture(scope="module")
def sample():
    X = clustered(300)  # 240 indexed: below the 256 vectors pq:Mx8 needs, so the fast codecs only
    d, q = holdout_split(len(X), n_queries=60)
    return {(2, 32): X[d]}, {(2, 32): X[q]}


def test_tuner_stays_within_the_budget_and_prunes(sample):
    docs, queries = sample
    r = tune_embeddings(docs, queries, full_size=(2, 32), budget_bytes=8, rescore_depths=(), keep=2)
    assert r.quality_metric == "agreement@10"
    assert all(row["bytes_per_vector"] <= 8 for row in r.rows)
    assert r.best["chosen"] and r.best["bytes_per_vector"] <= 8 and r.best["query_ms"] > 0
    full = [row for row in r.rows if row["query_ms"] is not None]
    codec_only = [row for row in r.rows if row["query_ms"] is None]
    assert codec_only, "the codec stage must prune some candidates before latency is measured"
    assert max(row["quality"] for row in codec_only) <= r.best["quality"]
    assert r.settings["configurations_measured"] == len(full) < len(r.rows)
    assert json.loads(json.dumps(r.to_dict()))["best"]["spec"] == r.best["spec"]
    assert "*" in r.table() and "agreement@10" in r.table()


def test_tuner_figure_equals_the_built_index(sample):
    from embedkit import EmbeddingIndex

    docs, queries = sample
    r = tune_embeddings(docs, queries, full_size=(2, 32), budget_bytes=16, rescore_depths=(4,), keep=2)
    b = r.best
    X, Q = docs[(2, 32)], queries[(2, 32)]
    idx = EmbeddingIndex.build([f"t{i}" for i in range(len(X))], embeddings=X, spec=b["spec"], rescore=b["rescore"],
                               index_type=b["index_type"], keyword=False, show_progress=False)
    _, rows = idx.search_embeddings(Q, 10)
    assert agreement_at_k(rows, exact_top_k(X, Q, 10)) == pytest.approx(b["quality"], abs=1e-4)


def test_latency_limit_and_exhaustive_structures(sample):
    docs, queries = sample
    with pytest.raises(BudgetError, match=r"^--max-query-ms 1e-06: no configuration within the budget searches "
                                          r"that fast; the fastest measured took [0-9.]+ ms per query \("):
        tune_embeddings(docs, queries, full_size=(2, 32), budget_bytes=100, max_query_ms=1e-6, rescore_depths=(),
                        keep=1)
    # flat meets a loose limit: no other structure is built
    loose = tune_embeddings(docs, queries, full_size=(2, 32), budget_bytes=100, max_query_ms=1e4, rescore_depths=(),
                            keep=1)
    assert {row["index_type"] for row in loose.rows} == {"flat"}
    # the exhaustive sweep measures every codec under IVF (nprobe ladder) and HNSW too (where the links fit)
    full = tune_embeddings(docs, queries, full_size=(2, 32), budget_bytes=100, rescore_depths=(), exhaustive=True,
                           hnsw_ms=(8,))
    kinds = {row["index_type"] for row in full.rows}
    assert kinds == {"flat", "ivf", "hnsw"} and all(row["query_ms"] is not None for row in full.rows)
    assert all(row["bytes_per_vector"] <= 100 for row in full.rows if row["chosen"])
    assert len(full.rows) > len(loose.rows)


def test_a_budget_below_every_candidate_is_one_line(sample):
    docs, queries = sample
    with pytest.raises(BudgetError) as e:
        tune_embeddings(docs, queries, full_size=(2, 32), budget_bytes=2)
    assert str(e.value) == ("--budget-bytes 2: smaller than any candidate; the smallest needs 4 bytes per vector "
                            "(binary at 2 layers x 32 dims)")
    with pytest.raises(BudgetError, match=r"^--max-ram 400 bytes \(1\.67 bytes per vector for 240 documents\): "
                                          r"smaller than any candidate; the smallest needs 4 bytes"):
        tune_embeddings(docs, queries, full_size=(2, 32), max_ram=400)


def test_parse_size():
    assert parse_size("200MB") == 200_000_000 and parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("64k") == 64000
    with pytest.raises(EmbedkitError, match=r"^--max-ram '12 parsecs': not a size"):
        parse_size("12 parsecs")


def test_ladder_model_and_judged_queries(tmp_path, isolated_cache):
    """A model whose embedkit_sizes.json lists a ladder: its sub-model is a candidate (encoded and timed), and
    with queries + qrels the table is judged by nDCG@10."""
    from embedkit.models.submodel import SIZES_FILE
    from embedkit.testing import WORDS, make_tiny_model

    path = make_tiny_model(tmp_path / "m", hidden=32, layers=2)
    (tmp_path / "m" / SIZES_FILE).write_text(json.dumps({"method": "starbucks", "sizes": [[1, 16], [2, 32]]}))
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 6)) for _ in range(80)]
    ids = [f"d{i}" for i in range(80)]
    queries = {f"q{i}": texts[i] for i in range(0, 80, 8)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(0, 80, 8)}
    r = tune(texts, ids, model=path, budget_bytes=8, queries=queries, qrels=qrels, throughput_texts=8,
             rescore_depths=(), index_types=("flat",))
    assert r.quality_metric == "ndcg@10"
    assert r.settings["model_sizes"] == [[2, 32], [1, 16]]
    assert r.settings["trained_sizes"] == {"method": "starbucks", "sizes": [[1, 16], [2, 32]]}
    small = [row for row in r.rows if (row["layers"], row["dim"]) == (1, 16)]
    assert small and all(row["encode_docs_per_s"] > 0 for row in small)
    assert not any(row["spec"].startswith("mrl:") for row in small)  # trained sizes are not cut further


def test_throughput_floor_keeps_only_fast_enough_sizes(sample):
    """``min_docs_per_s`` drops the model sizes that encode slower (the smaller sub-model is then chosen), and a
    floor no size meets is one line naming the fastest."""
    docs, queries = sample
    X, Q = docs[(2, 32)], queries[(2, 32)]
    two = ({(2, 32): X, (1, 16): X[:, :16]}, {(2, 32): Q, (1, 16): Q[:, :16]})
    rate = {(2, 32): 100.0, (1, 16): 250.0}
    free = tune_embeddings(*two, full_size=(2, 32), budget_bytes=200, encode_rate=rate, rescore_depths=(), keep=1)
    assert (free.best["layers"], free.best["dim"]) == (2, 32)  # float at full size is exact: agreement 1.0
    fast = tune_embeddings(*two, full_size=(2, 32), budget_bytes=200, encode_rate=rate, rescore_depths=(), keep=1,
                           min_docs_per_s=200)
    assert (fast.best["layers"], fast.best["dim"]) == (1, 16)
    assert {(r["layers"], r["dim"]) for r in fast.rows} == {(1, 16)}
    assert fast.settings["model_sizes_tried"] == [[1, 16]] and fast.best["encode_docs_per_s"] == 250.0
    with pytest.raises(BudgetError) as e:
        tune_embeddings(*two, full_size=(2, 32), budget_bytes=200, encode_rate=rate, min_docs_per_s=300)
    assert str(e.value) == ("--min-docs-per-s 300: no model size encodes that fast; the fastest measured, 1 layers x "
                            "16 dims, did 250 documents per second")
    with pytest.raises(EmbedkitError, match="^min_docs_per_s needs encode_rate"):
        tune_embeddings(*two, full_size=(2, 32), budget_bytes=200, min_docs_per_s=1)


def test_opq_is_screened_with_fewer_rotation_iterations():
    """The codec stage fits OPQ with SCREEN_OPQ_NITER iterations (its fit was ~90% of the tuner's time); the
    exhaustive sweep and the index finally built keep FAISS's 50."""
    import faiss

    from embedkit.retrieval.tune import SCREEN_OPQ_NITER, _Measurer

    X = clustered(700)
    c = Candidate(2, 32, "opq:4x4", None, 2, 0)
    got = []
    for fit_sample in (400, None):
        pipe = _Measurer({(2, 32): X}, {(2, 32): X[:5]}, fit_sample=fit_sample).fit(c)[0]
        opq = faiss.downcast_VectorTransform(faiss.downcast_index(pipe.quantizer.codec_).chain.at(0))
        got.append((opq.niter, opq.max_train_points))
    # screening: the rotation from the 400-document sample (its 4-bit codebooks from >= 624 = 39 x 16 of the 700)
    assert got == [(SCREEN_OPQ_NITER, 400), (50, 65536)] and SCREEN_OPQ_NITER < 50


def test_screening_never_fits_a_codebook_on_fewer_vectors_than_faiss_recommends():
    """Bug: the codec stage fitted 8-bit PQ/OPQ on its 2,000-document sample (8 vectors per centroid): the
    under-trained codebooks ranked opq:48x8 below pq:96x4 on agreement@10 although, fitted as the built index
    is, it leads (paraphrase collection, 48 B). Each codec now gets at least its ``recommended_fit_size``."""
    from embedkit.compression.pq import OPQQuantizer, PQQuantizer
    from embedkit.retrieval.tune import _Measurer

    assert PQQuantizer(48, 8).recommended_fit_size == 39 * 256 == OPQQuantizer(48, 8).recommended_fit_size
    assert PQQuantizer(96, 4).recommended_fit_size == 39 * 16
    X = clustered(1500)
    m = _Measurer({(2, 32): X}, {(2, 32): X[:5]}, fit_sample=300)
    for spec in ("pq:4x4", "pq:4x8", "binary"):
        m.fit(Candidate(2, 32, spec, None, code_bytes_per_vector(spec, 32), 0))
    assert m.fit_rows == {((2, 32), "pq:4x4"): 624, ((2, 32), "pq:4x8"): 1500, ((2, 32), "binary"): 300}
    m = _Measurer({(2, 32): X}, {(2, 32): X[:5]}, fit_sample=None)  # the exhaustive sweep: every document
    m.fit(Candidate(2, 32, "pq:4x4", None, 2, 0))
    assert m.fit_rows == {((2, 32), "pq:4x4"): 1500}
