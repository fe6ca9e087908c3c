import numpy as np
import pytest

from embedkit.data import load_vectors
from embedkit.errors import DataFormatError


def _w2v_text(words, vecs):
    return f"{len(words)} {vecs.shape[1]}\n" + "".join(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n"
                                                      for w, v in zip(words, vecs))


def test_text_and_binary_round_trip(tmp_path):
    words = ["king", "queen", "man"]
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    p = tmp_path / "w.txt"
    p.write_text(_w2v_text(words, vecs))
    kv = load_vectors(p)
    assert kv.index_to_key == words
    np.testing.assert_allclose(kv["queen"], vecs[1], atol=1e-6)
    b = tmp_path / "w.bin"
    kv.save_word2vec_format(str(b), binary=True)
    np.testing.assert_allclose(load_vectors(b).vectors, kv.vectors)
    with pytest.raises(DataFormatError, match="not a word2vec text file"):
        load_vectors(b, binary=False)


def test_bad_vector_files(tmp_path):
    with pytest.raises(DataFormatError, match="file not found"):
        load_vectors(tmp_path / "nope.txt")
    p = tmp_path / "w.txt"
    p.write_text("3 4\nking 1 2 3 4\n")  # the header promises 3 vectors
    with pytest.raises(DataFormatError, match=r"w.txt: not a word2vec text file"):
        load_vectors(p)
    p.write_bytes(b"1 2\nk\xffng 1 2\n")
    with pytest.raises(DataFormatError, match=r"w.txt: not a word2vec text file \(not valid UTF-8"):
        load_vectors(p)
    p.write_text("2 2\nking 1 2\nqueen nan 1\n")
    with pytest.raises(DataFormatError, match="the vector of 'queen' holds NaN or inf"):
        load_vectors(p)
