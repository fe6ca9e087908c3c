from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from tiny_models import tiny_bert_sentence_transformer  # noqa: E402

from embedkit.debias.sentence import (  # noqa: E402
    BiasProjection,
    debias_sentence_encoder,
    fit_sentence_bias_subspace,
    templated_pairs,
)
from embedkit.errors import EmbedkitError  # noqa: E402

PAIRS = [("woman", "man"), ("she", "he"), ("her", "his"), ("queen", "king")]


def test_projection_removes_subspace_and_survives_save(tmp_path):
    from sentence_transformers import SentenceTransformer

    st = tiny_bert_sentence_transformer(tmp_path / "m")
    texts = ["the doctor is good", "the nurse is a woman", "she is a player", "news about money"]
    model, evr = debias_sentence_encoder(st, PAIRS, n_directions=2)
    U = model[-1].directions.numpy()
    np.testing.assert_allclose(U @ U.T, np.eye(2), atol=1e-5)
    E = model.encode(texts)
    assert np.abs(E @ U.T).max() < 1e-5
    model.save(str(tmp_path / "saved"))
    again = SentenceTransformer(str(tmp_path / "saved"), device="cpu", trust_remote_code=True)  # embedkit module
    assert isinstance(again[-1], BiasProjection)
    np.testing.assert_allclose(again.encode(texts), E, atol=1e-6)


def test_errors(tmp_path):
    st = tiny_bert_sentence_transformer(tmp_path / "m")
    with pytest.raises(EmbedkitError, match="at least 2"):
        fit_sentence_bias_subspace(st, templated_pairs([("she", "he")], ["{}"]))
    with pytest.raises(EmbedkitError, match="n_directions"):
        fit_sentence_bias_subspace(st, templated_pairs(PAIRS[:1], ["{}", "this {}"]), n_directions=5)
    with pytest.raises(EmbedkitError, match="finite"):
        BiasProjection(np.array([[np.nan, 1.0]]))
