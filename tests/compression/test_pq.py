import numpy as np
import pytest

from embedkit import quantizer_from_spec
from embedkit.compression.pq import OPQQuantizer
from embedkit.errors import EmbedkitError, SpecError


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)


@pytest.mark.parametrize("spec,size", [("pq:4x4", 2), ("pq:8x4", 4), ("opq:4x4", 2)])
def test_code_size_and_decode(X, spec, size):
    p = quantizer_from_spec(spec).fit(X)
    assert p.code_size == size and p.spec == spec
    codes = p.encode(X[:10])
    assert codes.shape == (10, size)
    rec = p.decode(codes)
    assert rec.shape == (10, 16)
    # reconstruction is better than predicting zero
    assert ((rec - X[:10]) ** 2).sum() < (X[:10] ** 2).sum()


def test_errors(X):
    with pytest.raises(EmbedkitError, match="not divisible by m=5"):
        quantizer_from_spec("pq:5x4").fit(X)
    with pytest.raises(EmbedkitError, match="at least 256 training vectors"):
        quantizer_from_spec("pq:4x8").fit(X[:100])
    with pytest.raises(SpecError):
        quantizer_from_spec("pq:x4")


def test_default_nbits():
    assert quantizer_from_spec("opq:48").spec == "opq:48x8"


def _relative_error(p, Y):
    """Squared reconstruction error relative to the data's total variance."""
    return float(((p.decode(p.encode(Y)) - Y) ** 2).sum() / ((Y - Y.mean(0)) ** 2).sum())


def test_reconstruction_error_near_the_lloyd_max_optimum():
    """pq:4x4 on 4-d Gaussian data = a 16-level scalar quantizer per dimension.

    The optimal (Lloyd-Max) 16-level quantizer of a unit Gaussian has MSE 0.009497; k-means on
    2,000 samples must come close to it on held-out data, and cannot beat it by much.
    """
    X = np.random.default_rng(0).standard_normal((3000, 4)).astype(np.float32)
    p = quantizer_from_spec("pq:4x4").fit(X[:2000])
    assert _relative_error(p, X[:2000]) < 0.0140
    held_out = _relative_error(p, X[2000:])
    assert 0.0095 * 0.85 < held_out < 0.0160


def test_more_bits_less_error():
    X = np.random.default_rng(1).standard_normal((800, 8)).astype(np.float32)
    errors = [_relative_error(quantizer_from_spec(f"pq:4x{b}").fit(X), X) for b in (2, 3, 4)]
    # each extra bit per 2-d sub-vector at least ~halves the error at these rates (theory: 2^-1)
    assert errors[0] > 1.3 * errors[1] > 1.3 * 1.3 * errors[2], errors


def test_opq_beats_pq_on_anisotropic_data():
    """Variance concentrated in the first sub-space: PQ wastes centroids on the flat one, OPQ rotates."""
    rng = np.random.default_rng(0)
    Y = (rng.standard_normal((900, 8)) * np.geomspace(4, 0.1, 8)).astype(np.float32)
    pq = quantizer_from_spec("pq:2x4").fit(Y[:600])
    opq = quantizer_from_spec("opq:2x4").fit(Y[:600])
    assert _relative_error(opq, Y[:600]) <= _relative_error(pq, Y[:600])
    assert _relative_error(opq, Y[600:]) < 0.85 * _relative_error(pq, Y[600:])


def test_m_must_divide_the_dimension_with_a_hint(X):
    with pytest.raises(SpecError, match=r"pq:1000x8: the dimension 16 is not divisible by m=1000"):
        quantizer_from_spec("pq:1000x8").fit(X)
    with pytest.raises(SpecError, match=r"choose m among the divisors of 16 \(e.g. 2, 4, 8\)"):
        quantizer_from_spec("pq:6x4").fit(X)


def test_opq_iterations_and_rotation_sample_reach_faiss_and_survive_a_round_trip(tmp_path):
    """``niter`` is FAISS OPQMatrix.niter (the rotation's alternations), ``rotation_sample`` its
    max_train_points (vectors learning the rotation); saved with the pipeline, defaults 50 and FAISS's 65,536."""
    import faiss

    from embedkit.compression.pipeline import CompressionPipeline

    Y = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)

    def opq_of(q):
        return faiss.downcast_VectorTransform(faiss.downcast_index(q.codec_).chain.at(0))

    default = opq_of(quantizer_from_spec("opq:2x4").fit(Y).quantizer)
    assert (default.niter, default.max_train_points) == (50, 65536)
    pipe = quantizer_from_spec("opq:2x4")
    pipe.quantizer.set_params(niter=3, rotation_sample=300)
    pipe.fit(Y)
    assert (opq_of(pipe.quantizer).niter, opq_of(pipe.quantizer).max_train_points) == (3, 300)
    # a rotation learned from 300 of the 600 vectors is another rotation than one learned from all of them
    full = quantizer_from_spec("opq:2x4")
    full.quantizer.set_params(niter=3)
    assert not np.array_equal(full.fit(Y).encode(Y), pipe.encode(Y))
    pipe.save(tmp_path / "p")
    again = CompressionPipeline.load(tmp_path / "p")
    assert again.quantizer.get_params() == {"m": 2, "nbits": 4, "niter": 3, "rotation_sample": 300}
    np.testing.assert_array_equal(again.encode(Y), pipe.encode(Y))
    with pytest.raises(EmbedkitError, match="opq niter"):
        OPQQuantizer(2, 4, niter=0).fit(Y)
    with pytest.raises(EmbedkitError, match="opq rotation_sample"):
        OPQQuantizer(2, 4, rotation_sample=0).fit(Y)
    with pytest.raises(EmbedkitError, match="opq rotation_sample is 100: .* at least 256"):
        OPQQuantizer(2, 4, rotation_sample=100).fit(Y)
