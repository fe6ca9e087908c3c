import numpy as np
import pytest

from embedkit import load_encoder, model_fingerprint
from embedkit.errors import ModelNotFoundError


def test_default_model_is_offline_minilm(default_model):
    assert default_model.get_embedding_dimension() == 384
    v = default_model.encode(["hello world"])
    assert v.shape == (1, 384)
    assert np.isclose(np.linalg.norm(v), 1.0, atol=1e-4)


def test_local_path_loads_and_fingerprint_is_stable(tiny_model_path, tiny_model):
    again = load_encoder(tiny_model_path)
    assert model_fingerprint(again) == model_fingerprint(tiny_model)
    assert len(model_fingerprint(again)) == 16


def test_fingerprint_differs_between_models(tiny_model, default_model):
    assert model_fingerprint(tiny_model) != model_fingerprint(default_model)


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_encoder(str(tmp_path / "no-such-model"))


def test_hub_name_offline_names_the_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline.*all-MiniLM-L6-v2"):
        load_encoder("BAAI/bge-small-en-v1.5")


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        load_encoder(str(f))
