"""Local files as mteb tasks, the caching + compression encoder, and the suite (tiny model, tiny files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkit.errors import DataFormatError, EmbedkitError, SpecError

TOPICS = [
    "cat dog bird fish horse cow mouse animal pet kitten puppy food".split(),
    "ball game sport team play run jump fast slow first last good".split(),
    "stock price market bank money trade rate economy company profit share fund".split(),
    "python code program function list dict loop class error bug test data".split(),
]
FILLER = "the a of and to in is was for on that with".split()


def _sentence(i: int, topic: int) -> str:
    """A distinct sentence in the tiny model's vocabulary (so no two texts share an embedding)."""
    rng = np.random.default_rng(1000 * topic + i)
    words = list(rng.choice(TOPICS[topic], size=4)) + list(rng.choice(FILLER, size=2)) + list(rng.choice(TOPICS[(topic + i) % 4], size=2))
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture()
def sts_file(tmp_path):
    rows = ["score\tsentence1\tsentence2"]
    for i in range(30):
        a = _sentence(i, i % 4)
        b = _sentence(i + 100, (i + i % 2) % 4)  # never equal to a (exact ties would rank by rounding noise)
        rows.append(f"{(i * 37) % 50 / 10:.1f}\t{a}\t{b}")
    p = tmp_path / "mini.test.tsv"
    p.write_text("\n".join(rows) + "\n")
    return p


@pytest.fixture()
def labelled_file(tmp_path):
    rows = ["label\ttext"] + [f"t{i % 4}\t{_sentence(i, i % 4)}" for i in range(80)]
    p = tmp_path / "topics.tsv"
    p.write_text("\n".join(rows) + "\n")
    return p


@pytest.fixture()
def beir_dir(tmp_path):
    d = tmp_path / "minibeir"
    (d / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"title {i}", "text": _sentence(i, i % 4)} for i in range(40)]
    (d / "corpus.jsonl").write_text("\n".join(json.dumps(x) for x in docs) + "\n")
    qs = [{"_id": f"q{i}", "text": _sentence(i, i % 4)} for i in range(10)]
    (d / "queries.jsonl").write_text("\n".join(json.dumps(x) for x in qs) + "\n")
    qrels = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(8)] + ["q0\td4\t1"]
    (d / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return d


def _evaluate(encoder, task):
    import mteb

    res = mteb.evaluate(encoder, task, cache=None, overwrite_strategy="always", show_progress_bar=False,
                        co2_tracker=False, encode_kwargs={"batch_size": 16, "show_progress_bar": False})
    return res.task_results[0]


def test_sts_task_equals_scipy_spearman(tiny_model, sts_file, isolated_cache):
    from embedkit.data import read_sts_tsv
    from embedkit.evaluation.compressed_encoder import CompressedEncoder, EmbeddingStore
    from embedkit.evaluation.mteb_tasks import sts_task
    from embedkit.evaluation.sts import spearman_cosine

    store = EmbeddingStore(tiny_model)
    task = sts_task(sts_file)
    assert task.metadata.name == "LocalSTS-mini.test" and task.metadata.main_score == "cosine_spearman"
    tr = _evaluate(CompressedEncoder(store, "float"), task)
    ds = read_sts_tsv(sts_file)
    expected = spearman_cosine(store.get(ds.sentences1), store.get(ds.sentences2), ds.scores)
    assert abs(100 * tr.get_score() - expected) < 1e-4
    # binary: mteb scores the +-1 vectors; same as scipy on the sign vectors
    enc = CompressedEncoder(store, "binary")
    tr_b = _evaluate(enc, type(task)())
    sgn = lambda x: np.where(x > 0, 1.0, -1.0)  # noqa: E731
    expected_b = spearman_cosine(sgn(store.get(ds.sentences1)), sgn(store.get(ds.sentences2)), ds.scores)
    assert abs(100 * tr_b.get_score() - expected_b) < 1e-4
    assert enc.bytes_per_vector(task.metadata.name) == tiny_model.get_embedding_dimension() // 8


def test_sts_max_rows_and_malformed(sts_file, tmp_path):
    from embedkit.evaluation.mteb_tasks import sts_task

    t = sts_task(sts_file, max_rows=5)
    t.load_data()
    assert len(t.dataset["test"]) == 5
    bad = tmp_path / "bad.tsv"
    bad.write_text("score\tsentence1\tsentence2\n1.0\tonly one field\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:2: expected 3"):
        sts_task(bad)
    with pytest.raises(EmbedkitError, match="max_rows"):
        sts_task(sts_file, max_rows=0)


def test_retrieval_task_matches_embedkit_metrics(tiny_model, beir_dir, isolated_cache):
    from embedkit.data import read_beir
    from embedkit.evaluation.compressed_encoder import CompressedEncoder, EmbeddingStore
    from embedkit.evaluation.mteb_tasks import retrieval_task
    from embedkit.retrieval.metrics import retrieval_scores

    task = retrieval_task(beir_dir)
    assert task.n_queries == 8 and task.n_docs == 40
    store = EmbeddingStore(tiny_model)
    tr = _evaluate(CompressedEncoder(store, "float"), task)
    # independent computation: exact cosine ranking, embedkit's pytrec_eval-equivalent metrics
    ds = read_beir(beir_dir)
    ids, texts = ds.corpus_texts()
    qids, qtexts = ds.judged_queries()
    D, Q = store.get(texts), store.get(qtexts)
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    S = Qn @ Dn.T
    run = {q: {ids[j]: float(S[i, j]) for j in range(len(ids))} for i, q in enumerate(qids)}
    expected = retrieval_scores(run, ds.qrels)
    key = next(k for k in expected if "ndcg" in k.lower() and "10" in k)
    assert abs(tr.get_score() - expected[key]) < 1e-4
    # the fit sample is the corpus (documents), not the queries
    assert store.fit_sample(task.metadata.name).shape == (40, tiny_model.get_embedding_dimension())


def test_retrieval_subset_keeps_judged_docs(beir_dir):
    from embedkit.evaluation.mteb_tasks import retrieval_task

    t = retrieval_task(beir_dir, max_queries=3, max_docs=6)
    t.load_data()
    split = t.dataset["default"]["test"]
    docs = set(split["corpus"]["id"])
    assert len(docs) == 6 and {"d0", "d1", "d2", "d4"} <= docs
    assert set(split["relevant_docs"]) == {"q0", "q1", "q2"}
    with pytest.raises(DataFormatError, match="missing corpus.jsonl"):
        retrieval_task(beir_dir / "qrels")


def test_classification_split_is_deterministic_and_stratified(labelled_file):
    from embedkit.data import read_labelled_tsv
    from embedkit.evaluation.mteb_tasks import split_labelled

    labels, _ = read_labelled_tsv(labelled_file)
    tr1, te1 = split_labelled(labels)
    tr2, te2 = split_labelled(labels)
    assert (tr1, te1) == (tr2, te2)
    assert not set(tr1) & set(te1) and len(tr1) + len(te1) == 80
    assert sorted(labels[i] for i in te1).count("t0") == 10
    tr3, te3 = split_labelled(labels, max_rows=40)
    assert len(tr3) + len(te3) == 40 and {labels[i] for i in te3} == {"t0", "t1", "t2", "t3"}


def test_classification_and_clustering_run(tiny_model, labelled_file, isolated_cache, tmp_path):
    from embedkit.evaluation.mteb_tasks import classification_task, clustering_task
    from embedkit.evaluation.suite import run_suite

    tasks = [classification_task(labelled_file, n_experiments=2), clustering_task(labelled_file, max_rows=40)]
    res = run_suite(tiny_model, tasks, "binary;mrl:16", output=tmp_path / "out", show_progress=False)
    assert res["specs"] == ["float", "binary", "mrl:16"]
    scores = {(r["task"], r["spec"]): r for r in res["rows"]}
    for spec, nbytes in (("float", 4 * 32), ("binary", 4), ("mrl:16", 64)):
        r = scores[("LocalClassification-topics", spec)]
        assert 0.0 <= r["main_score"] <= 1.0 and r["bytes_per_vector"] == nbytes
        assert 0.0 <= scores[("LocalClustering-topics", spec)]["main_score"] <= 1.0
    # mteb's own result files, one folder per compression spec
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("Local*.json"))
    assert len(files) == 6 and any("experiments/compression_binary/" in f for f in files)
    saved = json.loads(next((tmp_path / "out").rglob("compression_binary/LocalClassification-topics.json")).read_text())
    assert saved["task_name"] == "LocalClassification-topics"
    assert abs(saved["scores"]["test"][0]["main_score"] - scores[("LocalClassification-topics", "binary")]["main_score"]) < 1e-12


def test_classification_needs_two_labels(tmp_path):
    from embedkit.evaluation.mteb_tasks import classification_task, clustering_task

    p = tmp_path / "one.tsv"
    p.write_text("label\ttext\na\tx\na\ty\n")
    with pytest.raises(DataFormatError, match="at least 2 labels"):
        classification_task(p)
    with pytest.raises(DataFormatError, match="at least 2 labels"):
        clustering_task(p)
    p.write_text("label\ttext\na\tx\nb\n")
    with pytest.raises(DataFormatError, match="one.tsv:3"):
        classification_task(p)


def test_every_text_encoded_once_across_specs(tiny_model, sts_file, labelled_file, monkeypatch, tmp_path):
    """Across 5 specs and 2 tasks the model encodes each distinct text exactly once, even without disk cache."""
    from embedkit.evaluation.mteb_tasks import clustering_task, sts_task
    from embedkit.evaluation.suite import run_suite

    encoded: list[str] = []
    orig = tiny_model.encode

    def counting(texts, *a, **kw):
        encoded.extend(texts)
        return orig(texts, *a, **kw)

    monkeypatch.setattr(tiny_model, "encode", counting)
    tasks = [sts_task(sts_file), clustering_task(labelled_file)]
    res = run_suite(tiny_model, tasks, "float;int8;binary;mrl:16;mrl:16,binary", cache=False, show_progress=False)
    assert len(res["rows"]) == 10
    assert len(encoded) == len(set(encoded)) == res["texts_encoded"]


def test_compressed_vectors_semantics(tiny_model, sts_file, isolated_cache):
    from embedkit.compression.spec import quantizer_from_spec
    from embedkit.evaluation.compressed_encoder import CompressedEncoder, EmbeddingStore

    store = EmbeddingStore(tiny_model)
    texts = ["a cat", "a dog", "stocks fell", "rain today"]
    X = store.get(texts, task="T")
    enc = CompressedEncoder(store, "mrl:8,binary")
    Y = enc.compress("T", X)
    assert Y.shape == (4, 8) and set(np.unique(Y)) <= {-1.0, 1.0}
    q = quantizer_from_spec("mrl:8,binary").fit(X)
    np.testing.assert_array_equal(Y, q.decode(q.encode(X)))
    assert np.array_equal(CompressedEncoder(store, "float").compress("T", X), X)
    asym = CompressedEncoder(store, "mrl:8,int8", asymmetric_queries=True)
    assert np.allclose(asym.compress("T", X, query=True), q.transform(X))
    with pytest.raises(SpecError):
        CompressedEncoder(store, "int9")
    with pytest.raises(EmbedkitError, match="no texts recorded"):
        CompressedEncoder(store, "binary").compress("unknown-task", X)


def test_parse_specs():
    from embedkit.evaluation.suite import parse_specs

    assert parse_specs("int8; binary ;mrl:128,binary;float;int8") == ["float", "int8", "binary", "mrl:128,binary"]
    assert parse_specs(["pq:8x8"]) == ["float", "pq:8x8"]
    for bad, msg in (("", "empty"), ("float;mrl", "integer"), ("binary,int8", "last stage"), ("zz", "unknown")):
        with pytest.raises(SpecError, match=msg):
            parse_specs(bad)
            from embedkit.compression.spec import quantizer_from_spec

            quantizer_from_spec(bad)


def test_registered_task_lookup_lives_in_evaluation(monkeypatch):
    import pytest

    from embedkit.errors import EmbedkitError
    from embedkit.evaluation import check_hub_available, resolve_mteb_tasks

    assert [t.metadata.name for t in resolve_mteb_tasks(["STSBenchmark"])] == ["STSBenchmark"]
    with pytest.raises(EmbedkitError, match="unknown MTEB task 'STSBenchmrk'; did you mean STSBenchmark"):
        resolve_mteb_tasks(["STSBenchmrk"])
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    check_hub_available()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # any of the three switches (one offline check)
    with pytest.raises(EmbedkitError, match="embedkit eval local"):
        check_hub_available()


def test_write_outputs_marks_an_eval_folder(tmp_path):
    from embedkit._io import output_kind
    from embedkit.evaluation.suite import write_outputs

    result = {"model": "m", "specs": ["float"], "tasks": [{"task": "T", "metric": "x"}],
              "rows": [{"task": "T", "spec": "float", "main_score": 0.5, "bytes_per_vector": 128, "metric": "x"}]}
    files = write_outputs(result, tmp_path / "out")
    assert output_kind(tmp_path / "out") == "eval" and set(files) == {"json", "markdown", "plot"}
