"""Issue 24 (and 28): every argument is checked before a model loads — even those that depend on the
model's size (read from its config files), on the index (ids it holds, documents it lacks), on the
shards (their dimension) or on an earlier output (a shards folder to resume).

Every command below runs with a trap on model loading: reaching a model fails the test (exit 1,
not the one-line exit 2 these checks give).
"""

from __future__ import annotations

import json

import pytest

LSH_384 = ("lsh:100000000: at most 12288 bits for 384-dimensional vectors (32 per dimension, the size of the "
           "float32 vector itself); use a smaller lsh:NBITS")


@pytest.fixture()
def trap(no_model, monkeypatch):
    """``no_model`` plus sentence-transformers itself and the exporter (which binds load_encoder at import)."""
    import sentence_transformers

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(sentence_transformers.SentenceTransformer, "__init__", boom)
    monkeypatch.setattr("embedkit.models.export.load_encoder", boom, raising=False)
    return boom


@pytest.fixture()
def corpus30(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"the cat and the dog number {i}"}) + "\n"
                         for i in range(30)))
    return p


@pytest.fixture()
def index_dir(tmp_path, tiny_model, corpus30, isolated_cache):
    """A saved index over corpus30, built with the tiny model (its recorded model)."""
    from embedkit.data import read_corpus
    from embedkit.retrieval import EmbeddingIndex

    ids, texts, _ = read_corpus(corpus30)
    out = tmp_path / "ix"
    EmbeddingIndex.build(texts, ids, model=tiny_model, spec="float", show_progress=False).save(out)
    return out


@pytest.fixture()
def shards(tmp_path, tiny_model, corpus30, isolated_cache):
    """An `embedkit encode` folder of corpus30 (32-d, shards of 8)."""
    from embedkit.data import read_corpus
    from embedkit.encoding import encode_to_shards

    ids, texts, _ = read_corpus(corpus30)
    out = tmp_path / "emb"
    encode_to_shards(tiny_model, texts, out, ids=ids, shard_size=8, show_progress=False)
    return out


def _error(res, line: str) -> None:
    """Exactly ``error: LINE`` on stderr, exit 2."""
    assert res.code == 2, (res.code, res.stderr, res.exception)
    assert res.stderr.strip().splitlines() == [f"error: {line}"], res.stderr


# --- sizes read from the model's config (default model: 6 layers, 384-d) ----------------------------

@pytest.mark.parametrize("spec, line", [
    ("lsh:100000000", f"--spec 'lsh:100000000': {LSH_384}"),
    ("pq:48x8", "--spec 'pq:48x8': pq:48x8 needs at least 256 training vectors (one per centroid), got 30"),
    ("mrl:512", "--spec 'mrl:512': mrl:512 needs embeddings of at least 512 dimensions, got 384"),
    ("mrl:128,pq:48", "--spec 'mrl:128,pq:48': pq:48x8: the dimension 128 is not divisible by m=48; choose m among "
                      "the divisors of 128 (e.g. 16, 32, 64)"),
])
def test_index_build_spec_sizes_before_the_model(trap, invoke, corpus30, tmp_path, spec, line):
    res = invoke("index", "build", "-c", corpus30, "-o", tmp_path / "out", "--spec", spec, "-q")
    _error(res, line)
    assert not (tmp_path / "out").exists()


def test_index_build_backend_and_model_folder(trap, invoke, corpus30, tmp_path, tiny_model_path):
    res = invoke("index", "build", "-c", corpus30, "-o", tmp_path / "o", "--spec", "rabitq:1", "--index-type", "hnsw")
    _error(res, "--spec 'rabitq:1': rabitq:1 supports index types flat, ivf, not 'hnsw' (--index-type)")
    res = invoke("index", "build", "-m", tiny_model_path, "-c", corpus30, "-o", tmp_path / "o", "--spec", "mrl:64")
    _error(res, "--spec 'mrl:64': mrl:64 needs embeddings of at least 64 dimensions, got 32")
    # --dim sets the dimension the spec sees, and is itself checked against the model's width
    res = invoke("index", "build", "-c", corpus30, "-o", tmp_path / "o", "--dim", "64", "--spec", "mrl:128")
    _error(res, "--spec 'mrl:128': mrl:128 needs embeddings of at least 128 dimensions, got 64")
    res = invoke("index", "build", "-c", corpus30, "-o", tmp_path / "o", "--dim", "400")
    _error(res, "--dim 400: the model's embeddings have 384 dimensions; use 1..384")
    res = invoke("index", "build", "-c", corpus30, "-o", tmp_path / "o", "--layers", "7")
    _error(res, "--layers 7: the model has 6 transformer layers; use 1..6")


def test_index_build_strict_blank_document_before_the_model(trap, invoke, tmp_path):
    c = tmp_path / "c.jsonl"
    c.write_text('{"_id": "a", "text": "the cat"}\n{"_id": "b", "text": "  "}\n')
    res = invoke("index", "build", "-c", c, "-o", tmp_path / "o", "--strict")
    _error(res, "document 1 (id 'b') is empty or whitespace-only; remove it, or skip such documents "
                "(on_empty='skip', the default; --strict turns this refusal on)")


def test_export_layers_and_dim_before_the_model(trap, invoke, tmp_path):
    from embedkit.models.loading import default_model_path

    res = invoke("export", default_model_path(), "--layers", "99", "-o", tmp_path / "x")
    _error(res, "--layers 99: the model has 6 transformer layers; use 1..6")
    res = invoke("export", default_model_path(), "--dim", "10000", "-o", tmp_path / "x")
    _error(res, "--dim 10000: the model's embeddings have 384 dimensions; use 1..384")
    assert not (tmp_path / "x").exists()


def test_mine_spec_sizes_before_the_model(trap, invoke, corpus30, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the cat\td1\nthe dog\td2\n")
    res = invoke("mine", "--pairs", pairs, "-c", corpus30, "--spec", "lsh:100000000", "-o", tmp_path / "m.tsv")
    _error(res, f"--spec 'lsh:100000000': {LSH_384}")
    res = invoke("mine", "--pairs", pairs, "-c", corpus30, "--spec", "pq:48x8", "-o", tmp_path / "m.tsv")
    _error(res, "--spec 'pq:48x8': pq:48x8 needs at least 256 training vectors (one per centroid), got 30")
    assert not (tmp_path / "m.tsv").exists()


def test_eval_every_spec_before_any_runs(trap, invoke, tmp_path):
    sts = tmp_path / "sts.tsv"
    sts.write_text("score\tsentence1\tsentence2\n1.0\ta cat\ta dog\n2.0\tstock\tbank\n")
    res = invoke("eval", "local", "--sts", sts, "--specs", "float;lsh:100000000")
    _error(res, f"--specs: {LSH_384}")
    res = invoke("eval", "local", "--sts", sts, "--specs", "float;mrl:512")
    _error(res, "--specs: mrl:512 needs embeddings of at least 512 dimensions, got 384")
    res = invoke("eval", "local", "--sts", sts, "--specs", "float,binary")
    _error(res, "--specs: quantizer 'float' must be the last stage of a spec (only transforms such as mrl:DIM go "
                "before it) (specs are separated by ';', a spec's own stages by ','; did you mean 'float;binary'?)")


# --- the shards: dimension, layout ----------------------------------------------------------------

def test_build_from_embeddings_refuses_bebr_and_sizes_before_fitting(trap, invoke, shards, corpus30, tmp_path,
                                                                     monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("BEBR was fitted before the spec was checked")

    monkeypatch.setattr("embedkit.compression.bebr.BEBRQuantizer._fit", no_fit)
    res = invoke("index", "build", "--embeddings", shards, "-c", corpus30, "-o", tmp_path / "o", "--spec", "bebr:2")
    _error(res, "--spec 'bebr:2': bebr codes are searched by their own structure; the disk-backed layout (index build "
                "--embeddings) needs a spec whose codes FAISS holds (float, f16, int8, binary, lsh, itq, pq, opq, rabitq)")
    res = invoke("index", "build", "--embeddings", shards, "-c", corpus30, "-o", tmp_path / "o", "--spec", "lsh:2000")
    _error(res, "--spec 'lsh:2000': lsh:2000: at most 1024 bits for 32-dimensional vectors (32 per dimension, the "
                "size of the float32 vector itself); use a smaller lsh:NBITS")
    assert not (tmp_path / "o").exists()


# --- an earlier encode folder ---------------------------------------------------------------------

def test_encode_refuses_a_folder_it_cannot_resume_before_the_model(trap, invoke, shards, corpus30, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text('{"_id": "x", "text": "the cat"}\n')
    res = invoke("encode", "-c", other, "-o", shards, "--shard-size", "8")
    _error(res, f"{shards} holds shards of another input (30 texts, not 1); choose an empty --out folder or pass "
                "--overwrite to replace them")
    res = invoke("encode", "-c", corpus30, "-o", shards)
    _error(res, f"{shards} holds shards of 8 texts each, not 4096; rerun with --shard-size 8 to resume, or pass "
                "--overwrite to replace them")
    before = {p.name: p.read_bytes() for p in shards.iterdir() if p.is_file()}
    (shards / "manifest.json").write_text("{broken")
    res = invoke("encode", "-c", corpus30, "-o", shards, "--shard-size", "8")
    assert res.code == 2 and res.stderr.startswith(f"error: {shards / 'manifest.json'}: not a readable shard manifest")
    assert len(res.stderr.strip().splitlines()) == 1
    assert {p.name for p in shards.iterdir() if p.is_file()} == set(before)  # nothing written or removed


# --- the index: ids it holds, documents it lacks, the query -----------------------------------------

@pytest.mark.parametrize("explicit_model", [False, True])
def test_index_add_existing_ids_before_the_model(trap, invoke, index_dir, corpus30, tiny_model_path, explicit_model):
    model = ["-m", tiny_model_path] if explicit_model else []
    res = invoke("index", "add", index_dir, "-c", corpus30, *model)
    _error(res, f"--corpus {corpus30}: 30 document id(s) already in {index_dir}: 'd0', 'd1', 'd10', 'd11', 'd12', ...; "
                "give new ids (or remove those first with `embedkit index remove`)")


@pytest.mark.parametrize("explicit_model", [False, True])
def test_index_eval_unknown_judged_document_before_the_model(trap, invoke, index_dir, tmp_path, tiny_model_path,
                                                             explicit_model):
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "the cat"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tdoc-99\t1\n")
    model = ["-m", tiny_model_path] if explicit_model else []
    res = invoke("index", "eval", index_dir, "--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "qrels.tsv", *model)
    _error(res, "qrels.tsv:3: unknown document id 'doc-99'")


def test_index_eval_beir_without_usable_qrels(trap, invoke, index_dir, tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "the cat"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "the cat"}\n')
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    res = invoke("index", "eval", index_dir, "--beir", beir)
    _error(res, f"--beir {beir}: no judgements for split 'test' (qrels/test.tsv is missing or empty); its qrels "
                "splits: train (--split)")


@pytest.mark.parametrize("query", ["", "   ", "\u200b"])
def test_index_search_empty_query_before_anything(trap, invoke, index_dir, query):
    res = invoke("index", "search", index_dir, query)
    _error(res, "QUERY is empty; give some text to search for")


# --- the library pieces ---------------------------------------------------------------------------

def test_read_shape_from_configs(tmp_path, tiny_model_path):
    from embedkit.models.loading import default_model_path
    from embedkit.models.shape import ModelShape, read_shape

    assert read_shape(default_model_path()) == ModelShape(6, 384, 384)
    assert read_shape(tiny_model_path) == ModelShape(2, 32, 32)
    assert read_shape(tmp_path) is None  # no config
    # a Dense head, two pooling modes (legacy flags), a saved truncate_dim, an unknown module
    m = tmp_path / "m"
    for sub in ("1_Pooling", "2_Dense"):
        (m / sub).mkdir(parents=True)
    (m / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 64}))
    (m / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    (m / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 128, "out_features": 48}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (m / "modules.json").write_text(json.dumps(modules))
    assert read_shape(m) == ModelShape(4, 64, 128)
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (m / "modules.json").write_text(json.dumps(modules))
    assert read_shape(m) == ModelShape(4, 64, 48)
    (m / "config_sentence_transformers.json").write_text(json.dumps({"truncate_dim": 32}))
    assert read_shape(m) == ModelShape(4, 64, 32)
    modules.append({"idx": 3, "name": "3", "path": "3_X", "type": "somewhere.Custom"})
    (m / "modules.json").write_text(json.dumps(modules))
    assert read_shape(m) == ModelShape(4, 64, None)  # unknown: the spec is checked after loading, as before


def test_check_spec_library():
    from embedkit.compression.spec import check_spec
    from embedkit.errors import SpecError

    assert [s.name for s in check_spec("mrl:128,binary", dim=384, n_train=5, backend="hnsw").stages] == ["mrl", "binary"]
    with pytest.raises(SpecError, match=r"^itq:64 needs at most as many bits as input dimensions \(32\)"):
        check_spec("itq:64", dim=32)
    with pytest.raises(SpecError, match=r"^pq:4x8 needs at least 256 training vectors \(one per centroid\), got 10$"):
        check_spec("pq:4x8", dim=32, n_train=10)
    check_spec("pq:4x8", dim=32)  # the number of vectors not known yet: not checked
    check_spec("bebr:2")
    with pytest.raises(SpecError, match="disk-backed layout"):
        check_spec("mrl:64,bebr:2", disk=True)


def test_specs_semicolon_hint_only_for_whole_specs_joined_by_commas():
    from embedkit.errors import SpecError
    from embedkit.evaluation.suite import parse_specs

    with pytest.raises(SpecError, match=r"did you mean 'binary;int8'\?\)$"):
        parse_specs("binary,int8")
    with pytest.raises(SpecError) as e:
        parse_specs("float,int9")
    assert str(e.value) == ("--specs: unknown compression stage 'int9' in spec 'float,int9'; known: float, f16, int8, "
                            "binary, mrl, lsh, itq, pq, opq, rabitq, bebr")
    assert parse_specs("mrl:128,binary", dim=384) == ["float", "mrl:128,binary"]


@pytest.mark.parametrize("args, line", [
    (["--spec", "mrl:512"], "--spec 'mrl:512': mrl:512 needs embeddings of at least 512 dimensions, got 384"),
    (["--spec", "lsh:100000000"], f"--spec 'lsh:100000000': {LSH_384}"),
    (["--limit", "30", "--spec", "pq:48x8"],
     "--spec 'pq:48x8': pq:48x8 needs at least 256 training vectors (one per centroid), got 30"),
    (["--dim", "64", "--spec", "mrl:128"], "--spec 'mrl:128': mrl:128 needs embeddings of at least 128 dimensions, got 64"),
])
def test_demo_spec_sizes_before_the_model(trap, invoke, tmp_path, args, line):
    """embedkit demo checks --spec against the model's config (and the corpus size) before loading it (issue 23)."""
    res = invoke("demo", "-o", tmp_path / "d", *args, "-q")
    _error(res, line)
    assert not (tmp_path / "d").exists()


def test_demo_spec_sizes_of_a_model_folder(trap, invoke, tiny_model_path):
    res = invoke("demo", "-m", tiny_model_path, "--spec", "mrl:64")
    _error(res, "--spec 'mrl:64': mrl:64 needs embeddings of at least 64 dimensions, got 32")
