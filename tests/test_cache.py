import numpy as np
import pytest

from embedkit.cache import EmbeddingCache, encode_cached
from embedkit.encoding import encode_to_shards, load_shards
from embedkit.errors import EmbedkitError


class CountingModel:
    """Wraps a SentenceTransformer and counts how many texts it encodes."""

    def __init__(self, model):
        self.model = model
        self.encoded = 0
        self.fail_after = None

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, texts, **kw):
        if self.fail_after is not None and self.encoded + len(texts) > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.encoded += len(texts)
        return self.model.encode(texts, **kw)


def test_cache_encodes_each_text_once(tiny_model, isolated_cache):
    m = CountingModel(tiny_model)
    texts = ["a cat", "the dog", "a cat", "stock price"]
    a = encode_cached(m, texts, show_progress=False)
    assert m.encoded == 3  # the duplicate is encoded once
    b = encode_cached(m, ["stock price", "the dog", "new text here"], show_progress=False)
    assert m.encoded == 4
    np.testing.assert_allclose(b[0], a[3])
    np.testing.assert_allclose(a, tiny_model.encode(texts), atol=1e-6)
    # a fresh cache object (a new process) finds the shards on disk
    m2 = CountingModel(tiny_model)
    encode_cached(m2, texts, show_progress=False, cache=EmbeddingCache())
    assert m2.encoded == 0


@pytest.mark.slow
def test_cache_is_keyed_by_model(tiny_model, default_model, isolated_cache):
    a = encode_cached(tiny_model, ["a cat"], show_progress=False)
    b = encode_cached(default_model, ["a cat"], show_progress=False)
    assert a.shape == (1, 32) and b.shape == (1, 384)


def test_cache_resumes_after_a_kill(tiny_model, isolated_cache):
    texts = [f"the cat {i}" for i in range(50)]
    m = CountingModel(tiny_model)
    m.fail_after = 25
    with pytest.raises(KeyboardInterrupt):
        encode_cached(m, texts, shard_size=10, show_progress=False)
    assert m.encoded == 20  # two complete shards survived
    m2 = CountingModel(tiny_model)
    out = encode_cached(m2, texts, shard_size=10, show_progress=False)
    assert m2.encoded == 30 and out.shape == (50, 32)


def test_bad_texts(tiny_model, isolated_cache):
    with pytest.raises(EmbedkitError, match="text 1 is empty or whitespace-only"):
        encode_cached(tiny_model, ["ok", "  "], show_progress=False)
    with pytest.raises(EmbedkitError, match="single string"):
        encode_cached(tiny_model, "a cat", show_progress=False)


def test_encode_to_shards_resumes(tiny_model, isolated_cache, tmp_path):
    texts = [f"a dog {i}" for i in range(23)]
    out = tmp_path / "emb"
    m = CountingModel(tiny_model)
    m.fail_after = 15
    with pytest.raises(KeyboardInterrupt):
        encode_to_shards(m, texts, out, shard_size=5, show_progress=False, cache=False)
    assert sorted(p.name for p in out.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    m2 = CountingModel(tiny_model)
    manifest = encode_to_shards(m2, texts, out, shard_size=5, show_progress=False, cache=False)
    assert manifest["resumed_shards"] == 3 and m2.encoded == 8
    np.testing.assert_allclose(load_shards(out), tiny_model.encode(texts), atol=1e-6)
    with pytest.raises(EmbedkitError, match="another input or model"):
        encode_to_shards(tiny_model, texts[:-1], out, shard_size=5, show_progress=False)


def test_long_texts_are_cut_before_tokenizing(tiny_model, isolated_cache, caplog):
    from embedkit.data import MAX_TEXT_CHARS

    m = CountingModel(tiny_model)
    seen = []
    orig = m.encode
    m.encode = lambda texts, **kw: (seen.extend(texts), orig(texts, **kw))[1]
    long = "the cat " * (MAX_TEXT_CHARS // 4)  # 2 x MAX_TEXT_CHARS characters on one line
    with caplog.at_level("WARNING", logger="embedkit.cache"):
        out = encode_cached(m, ["short", long], show_progress=False)
    assert sorted(len(t) for t in seen) == [5, MAX_TEXT_CHARS]
    assert "cut 1 text(s) longer than 100000 characters" in caplog.text
    assert out.shape == (2, 32) and np.isfinite(out).all()


def test_zero_width_text_and_bad_sizes_refused(tiny_model, isolated_cache):
    with pytest.raises(EmbedkitError, match="text 1 is empty or whitespace-only"):
        encode_cached(tiny_model, ["ok", "\u200b\u200d\ufeff"], show_progress=False)
    with pytest.raises(EmbedkitError, match="text 0 is empty"):
        encode_cached(tiny_model, ["\x00\x00"], show_progress=False)
    with pytest.raises(EmbedkitError, match="batch_size must be >= 1, got 0"):
        encode_cached(tiny_model, ["ok"], batch_size=0, show_progress=False)


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_cache_reencodes_a_damaged_shard(tiny_model, isolated_cache):
    texts = [f"the dog {i}" for i in range(6)]
    want = encode_cached(tiny_model, texts, shard_size=3, show_progress=False)
    shards = sorted(isolated_cache.rglob("*.vecs.npy"))
    assert len(shards) == 2
    _flip_last_byte(shards[1])  # a flipped bit in the last vector of the second shard
    m = CountingModel(tiny_model)
    got = encode_cached(m, texts, show_progress=False, cache=EmbeddingCache())
    assert m.encoded == 3  # only the damaged shard's texts
    np.testing.assert_array_equal(got, want)
    # a shard holding NaN (no checksum to compare: written by an older embedkit) is not trusted either
    vp = sorted(isolated_cache.rglob("*.vecs.npy"))[0]
    arr = np.load(vp)
    arr[0, 0] = np.nan
    np.save(vp, arr)
    vp.with_name(vp.name.replace(".vecs.npy", ".sha256")).unlink()
    m = CountingModel(tiny_model)
    got = encode_cached(m, texts, show_progress=False, cache=EmbeddingCache())
    assert m.encoded == 3 and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_encode_writes_ids_and_marks_the_folder(tiny_model, isolated_cache, tmp_path):
    import json

    from embedkit._io import output_kind

    texts = [f"a dog {i}" for i in range(7)]
    ids = [f"doc-{i}" for i in range(7)]
    out = tmp_path / "emb"
    manifest = encode_to_shards(tiny_model, texts, out, ids=ids, shard_size=3, show_progress=False)
    assert manifest["shards"] == 3 and manifest["texts_cut"] == 0
    X, got_ids = load_shards(out, return_ids=True)
    assert got_ids == ids and X.shape == (7, 32)
    assert json.loads((out / "ids.json").read_text()) == ids
    assert output_kind(out) == "shards"
    assert set(json.loads((out / "manifest.json").read_text())["shard_sha256"]) == {
        "shard-00000.npy", "shard-00001.npy", "shard-00002.npy"}
    # default ids are row numbers
    encode_to_shards(tiny_model, texts, tmp_path / "e2", shard_size=3, show_progress=False)
    assert load_shards(tmp_path / "e2", return_ids=True)[1] == [str(i) for i in range(7)]
    with pytest.raises(EmbedkitError, match="id 'x' appears twice"):
        encode_to_shards(tiny_model, texts[:2], tmp_path / "e3", ids=["x", "x"], show_progress=False)
    with pytest.raises(EmbedkitError, match="1 ids for 2 texts"):
        encode_to_shards(tiny_model, texts[:2], tmp_path / "e3", ids=["x"], show_progress=False)


def test_encode_resume_reencodes_bad_shards(tiny_model, isolated_cache, tmp_path):
    texts = [f"a cat {i}" for i in range(9)]
    out = tmp_path / "emb"
    encode_to_shards(tiny_model, texts, out, shard_size=3, show_progress=False, cache=False)
    want = load_shards(out)
    arr = np.load(out / "shard-00001.npy")
    arr[1, 2] = np.nan
    np.save(out / "shard-00001.npy", arr)  # NaN in the middle shard
    _flip_last_byte(out / "shard-00002.npy")  # a flipped bit in the last one
    with pytest.raises(EmbedkitError, match="shard-00001.npy is damaged"):
        load_shards(out)
    m = CountingModel(tiny_model)
    manifest = encode_to_shards(m, texts, out, shard_size=3, show_progress=False, cache=False)
    assert manifest["resumed_shards"] == 1 and manifest["reencoded_shards"] == 2 and m.encoded == 6
    np.testing.assert_allclose(load_shards(out), want, atol=1e-6)
    # a shard written just before a kill (no checksum recorded yet) is encoded again, not trusted
    import json

    man = json.loads((out / "manifest.json").read_text())
    del man["shard_sha256"]["shard-00000.npy"]
    (out / "manifest.json").write_text(json.dumps(man))
    m = CountingModel(tiny_model)
    manifest = encode_to_shards(m, texts, out, shard_size=3, show_progress=False, cache=False)
    assert manifest["resumed_shards"] == 2 and m.encoded == 3


def test_encode_output_errors(tiny_model, isolated_cache, tmp_path):
    from embedkit.errors import OutputExistsError

    texts = ["a cat", "a dog"]
    f = tmp_path / "file.npy"
    f.write_text("mine")
    with pytest.raises(OutputExistsError, match="exists and is not a folder"):
        encode_to_shards(tiny_model, texts, f, show_progress=False)
    assert f.read_text() == "mine"
    d = tmp_path / "thesis"
    d.mkdir()
    (d / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputExistsError, match="not empty and not an embedkit shards"):
        encode_to_shards(tiny_model, texts, d, show_progress=False)
    assert (d / "thesis.txt").read_text() == "years of work"
    out = tmp_path / "emb"
    encode_to_shards(tiny_model, texts, out, show_progress=False)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(EmbedkitError, match=r"manifest.json: not a readable shard manifest") as e:
        encode_to_shards(tiny_model, texts, out, show_progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(EmbedkitError, match="not a readable shard manifest"):
        load_shards(out)
    manifest = encode_to_shards(tiny_model, texts, out, show_progress=False, overwrite=True)
    assert manifest["resumed_shards"] == 0 and load_shards(out).shape == (2, 32)
    # another corpus into the same folder: refused, or replaced with overwrite
    with pytest.raises(EmbedkitError, match="another input or model"):
        encode_to_shards(tiny_model, ["other"], out, show_progress=False)
    encode_to_shards(tiny_model, ["other"], out, show_progress=False, overwrite=True)
    assert load_shards(out, return_ids=True)[1] == ["0"]
    with pytest.raises(OutputExistsError, match="would overwrite the input"):
        encode_to_shards(tiny_model, texts, tmp_path / "corpus" / "emb", inputs=[tmp_path / "corpus"],
                         show_progress=False)
