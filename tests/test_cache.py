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
