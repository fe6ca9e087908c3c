"""One definition of "the layer-L sentence embedding" across training, encode_ladder, sub-models and export.

Tiny random BERT, GPT-2, Llama and Qwen3 models (built from transformers config classes): the
decoders' final norm (GPT-2 ``ln_f``, Llama / Qwen3 ``norm``) applies at every layer, as the
L-layer sub-model applies it, so all four paths give the same vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedkit.models.loading import load_encoder
from embedkit.testing import make_tiny_model, make_tiny_tokenizer

TEXTS = ["the cat is on the mat", "stock price of the bank", "a dog", "python code has a bug and a test"]
LADDER = [(1, 8), (2, 16), (3, 32)]


def _decoder(path: Path, arch: str) -> str:
    """A tiny random decoder sentence-transformers model (Transformer, mean Pooling, Normalize) at ``path``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel, Qwen3Config, Qwen3Model

    hf = path / "_hf"
    vocab = len(make_tiny_tokenizer(hf))
    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=64, vocab_size=vocab, bos_token_id=2, eos_token_id=3)
    model = {"gpt2": lambda: GPT2Model(GPT2Config(n_embd=32, n_layer=3, n_head=2, n_positions=64, vocab_size=vocab,
                                                  bos_token_id=2, eos_token_id=3)),
             "llama": lambda: LlamaModel(LlamaConfig(**common)),
             "qwen3": lambda: Qwen3Model(Qwen3Config(head_dim=16, **common))}[arch]()
    with torch.no_grad():  # random weights for the norms too, so applying one or not is visible
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(str(hf))
    SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=32), Pooling(32, "mean"), Normalize()],
                        device="cpu").save(str(path))
    return str(path)


@pytest.fixture(scope="module", params=["bert", "gpt2", "llama", "qwen3"])
def arch_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "m"
    if request.param == "bert":
        return request.param, make_tiny_model(path, hidden=32, layers=3)
    return request.param, _decoder(path, request.param)


def test_training_ladder_submodel_and_export_give_the_same_embedding(arch_model, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedkit.models.export import export_submodel
    from embedkit.models.submodel import encode_ladder, final_norm
    from embedkit.training.losses.starbucks import StarbucksLoss

    arch, path = arch_model
    full = load_encoder(path, device="cpu")
    full.eval()
    assert (final_norm(full[0].auto_model) is None) == (arch == "bert")
    ladder = encode_ladder(full, TEXTS, LADDER, batch_size=3)
    loss = StarbucksLoss(full, MultipleNegativesRankingLoss(full), LADDER)
    with torch.no_grad():
        trained = loss.layer_embeddings(full.preprocess(TEXTS), [1, 2, 3])
    for L, D in LADDER:
        sub = load_encoder(path, device="cpu", layers=L, dim=D).encode(TEXTS)
        np.testing.assert_allclose(ladder[(L, D)], sub, atol=2e-6, err_msg=f"{arch} encode_ladder vs sub-model {L}x{D}")
        np.testing.assert_allclose(F.normalize(trained[L][:, :D], dim=-1).numpy(), sub, atol=2e-6,
                                   err_msg=f"{arch} training vs sub-model {L}x{D}")
    out = export_submodel(path, tmp_path / "exported", layers=2, dim=16)
    plain = SentenceTransformer(str(out), device="cpu")  # no embedkit code involved in encoding
    np.testing.assert_allclose(plain.encode(TEXTS), ladder[(2, 16)], atol=2e-6, err_msg=f"{arch} export 2x16")


def test_2dmse_trains_the_layer_embedding_the_submodel_serves(tmp_path):
    """embedkit's Matryoshka2dLoss (sentence-transformers' 2DMSE) sees the normed layer states on a decoder.

    sentence-transformers 6 trains the full size plus the mean over layers 0 (the embeddings) .. depth-1."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedkit.training.losses.matryoshka2d import Matryoshka2dLoss

    path = _decoder(tmp_path / "gpt2", "gpt2")
    model = load_encoder(path, device="cpu")
    model.eval()
    mnrl = MultipleNegativesRankingLoss(model)
    loss = Matryoshka2dLoss(model, mnrl, [32], n_layers_per_step=-1, n_dims_per_step=-1, kl_div_weight=0.0)
    a, p = TEXTS[:2], TEXTS[2:]
    with torch.no_grad():
        got = loss([model.preprocess(a), model.preprocess(p)], torch.zeros(2))

        def emb(texts, L):
            if L == 0:  # no 0-layer sub-model: the embeddings output through the final norm, mean-pooled
                f = model.preprocess(texts)
                auto = model[0].auto_model
                h = auto.ln_f(auto(input_ids=f["input_ids"], attention_mask=f["attention_mask"],
                                   output_hidden_states=True).hidden_states[0])
                m = f["attention_mask"].unsqueeze(-1).float()
                return (h * m).sum(1) / m.sum(1)
            return torch.from_numpy(load_encoder(path, device="cpu", layers=L).encode(texts))

        want = mnrl.compute_loss_from_embeddings([emb(a, 3), emb(p, 3)], None)
        want = want + sum(mnrl.compute_loss_from_embeddings([emb(a, L), emb(p, L)], None) for L in (0, 1, 2)) / 3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert "forward" not in model[0].__dict__  # the Transformer module's own forward is back
