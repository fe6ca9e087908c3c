from __future__ import annotations

import numpy as np
import pytest
import torch

from embedkit.testing import make_tiny_model
from embedkit.training.smae import SMAEModel, _load_mlm, pretrain_smae, smae_collate

TEXTS = ["the cat is on the mat with a dog", "stock price of the bank is high", "he is a good doctor and she is a nurse",
         "python code has a bug in the loop", "the market rate is low"] * 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("smae") / "m", hidden=32, layers=2)


def test_masks_encoder_within_decoder_and_never_special(tiny):
    mlm, tok = _load_mlm(tiny)
    b = smae_collate(TEXTS, tok, seed=3)
    enc = b["labels"] != -100
    dec = b["decoder_labels"] != -100
    assert enc.any() and (dec.sum() > enc.sum())
    assert not (enc & ~dec).any()  # every encoder-masked token is decoder-masked too
    special = torch.isin(torch.as_tensor(tok(TEXTS, padding=True)["input_ids"]),
                         torch.tensor(tok.all_special_ids))
    assert not (dec & special).any()
    n = b["attention_mask"].sum(1).float()
    assert torch.allclose(dec.sum(1) / n, torch.full_like(n, 0.4), atol=0.15)


def test_head_slices_the_dense_weight_to_d_columns(tiny):
    mlm, _ = _load_mlm(tiny)
    m = SMAEModel(mlm, [(1, 8), (2, 32)])
    h = torch.randn(2, 5, 8)
    t = mlm.cls.predictions.transform
    want = mlm.cls.predictions.decoder(t.LayerNorm(t.transform_act_fn(h @ t.dense.weight[:, :8].T + t.dense.bias)))
    torch.testing.assert_close(m.head(h), want)


def test_pretrain_writes_a_loadable_model_and_resumes(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = pretrain_smae(tiny, TEXTS, tmp_path / "run", ladder=[(1, 16), (2, 32)], steps=4, batch_size=4,
                        save_every=2, learning_rate=1e-3)
    st = SentenceTransformer(str(out), device="cpu")
    assert st.encode(["a cat"]).shape == (1, 32)
    # kill after step 2 == stop there; resuming to 4 must give the uninterrupted weights
    part = pretrain_smae(tiny, TEXTS, tmp_path / "run2", ladder=[(1, 16), (2, 32)], steps=4, batch_size=4,
                         save_every=2, learning_rate=1e-3, _stop_after=2)
    assert part is None
    resumed = pretrain_smae(tiny, TEXTS, tmp_path / "run2", ladder=[(1, 16), (2, 32)], steps=4, batch_size=4,
                            save_every=2, learning_rate=1e-3, resume=True)
    a = SentenceTransformer(str(out), device="cpu").encode(TEXTS[:3])
    b = SentenceTransformer(str(resumed), device="cpu").encode(TEXTS[:3])
    np.testing.assert_allclose(a, b, atol=1e-5)
