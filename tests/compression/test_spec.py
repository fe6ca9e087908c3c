import numpy as np
import pytest

from embedkit import parse_spec, quantizer_from_spec
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.errors import NotFittedError, SpecError


def test_parse_examples():
    assert parse_spec("mrl:128,binary") == [("mrl", {"dim": 128}), ("binary", {})]
    assert parse_spec(" INT8 ") == [("int8", {})]
    assert parse_spec("pq:48") == [("pq", {"m": 48, "nbits": 8})]
    assert parse_spec("opq:24x4") == [("opq", {"m": 24, "nbits": 4})]
    assert parse_spec("bebr:2x256") == [("bebr", {"nbits": 2, "width": 256})]
    assert parse_spec("rabitq:2") == [("rabitq", {"nbits": 2})]


@pytest.mark.parametrize("spec,msg", [
    ("", "empty"), ("bogus", "unknown compression stage 'bogus'"), ("mrl", "integer argument"),
    ("mrl:abc", "integer argument"), ("binary:3", "takes no argument"), ("float,,binary", "empty stage"),
    ("rabitq:9", "1..4"), ("bebr:7", "1..4"), ("pq:x8", "MxNBITS"),
])
def test_parse_errors(spec, msg):
    with pytest.raises(SpecError, match=msg):
        parse_spec(spec)


def test_quantizer_must_be_last():
    with pytest.raises(SpecError, match="must be the last stage"):
        quantizer_from_spec("binary,mrl:64")


@pytest.mark.parametrize("spec,size", [("float", 1536), ("f16", 768), ("int8", 384), ("binary", 48),
                                       ("mrl:128", 512), ("mrl:128,binary", 16), ("mrl:100,binary", 13)])
def test_code_sizes(spec, size):
    X = np.random.default_rng(0).standard_normal((300, 384)).astype(np.float32)
    q = quantizer_from_spec(spec).fit(X)
    assert q.code_size == size
    assert q.encode(X[:5]).shape == (5, size)
    assert q.encode(X[:5]).dtype == np.uint8


@pytest.mark.parametrize("spec", ["float", "f16", "int8", "binary", "mrl:64", "mrl:64,int8", "mrl:128,binary"])
def test_protocol_errors_and_roundtrip(spec, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 384)).astype(np.float32)
    q = quantizer_from_spec(spec)
    with pytest.raises(NotFittedError, match="not fitted"):
        q.encode(X)
    q.fit(X)
    with pytest.raises(Exception, match="dimension 100, expected 384"):
        q.encode(X[:, :100])
    bad = X[:3].copy()
    bad[1, 5] = np.nan
    with pytest.raises(Exception, match="NaN or inf"):
        q.encode(bad)
    q.save(tmp_path)
    q2 = CompressionPipeline.load(tmp_path)
    assert q2.spec == q.spec
    np.testing.assert_array_equal(q2.encode(X), q.encode(X))


def test_binary_matches_sentence_transformers_ubinary():
    from sentence_transformers.util.quantization import quantize_embeddings

    X = np.random.default_rng(2).standard_normal((50, 384)).astype(np.float32)
    q = quantizer_from_spec("binary").fit(X)
    np.testing.assert_array_equal(q.encode(X), quantize_embeddings(X, "ubinary"))


def test_int8_ranges_are_the_corpus_min_max():
    X = np.random.default_rng(3).uniform(-2, 3, (400, 8)).astype(np.float32)
    q = quantizer_from_spec("int8").fit(X)
    codes = q.encode(X)
    # the per-dimension minimum maps to code 0 and the maximum to 255
    assert (codes[X.argmin(0), range(8)] == 0).all()
    assert (codes[X.argmax(0), range(8)] == 255).all()
    # decoding is within half a step of the input
    step = (X.max(0) - X.min(0)) / 255
    assert (np.abs(q.decode(codes) - X) <= step * 0.5 + 1e-5).all()


def test_mrl_renormalises_and_rejects_too_large():
    X = np.random.default_rng(4).standard_normal((10, 16)).astype(np.float32)
    q = quantizer_from_spec("mrl:4").fit(X)
    T = q.transform(X)
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(T, X[:, :4] / np.linalg.norm(X[:, :4], axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(Exception, match="at least 32 dimensions"):
        quantizer_from_spec("mrl:32").fit(X)
