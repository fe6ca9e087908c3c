from __future__ import annotations

import pytest
import torch

from embedkit.errors import EmbedkitError
from embedkit.models.bidirectional import make_bidirectional


def _tiny(family):
    torch.manual_seed(0)
    if family == "gpt2":
        from transformers import GPT2Config, GPT2Model

        return GPT2Model(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("padded", [False, True])
def test_later_token_changes_earlier_outputs_only_when_bidirectional(family, padded):
    a = torch.tensor([[5, 6, 7, 8, 9, 10]])
    b = a.clone()
    b[0, 4] = 20  # change a token after position 2
    mask = torch.ones_like(a)
    if padded:  # a padded batch takes the explicit-mask path, an unpadded one the kernels' is_causal path
        a, b = torch.cat([a, a]), torch.cat([b, b])
        mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    model = _tiny(family)
    with torch.no_grad():
        causal = [model(input_ids=x, attention_mask=mask).last_hidden_state for x in (a, b)]
    torch.testing.assert_close(causal[0][:, :3], causal[1][:, :3])  # causal: the past cannot see the future
    assert make_bidirectional(model) == 2
    with torch.no_grad():
        bi = [model(input_ids=x, attention_mask=mask).last_hidden_state for x in (a, b)]
    assert (bi[0][:, :3] - bi[1][:, :3]).abs().max() > 1e-4
    if padded:  # padding stays masked: changing a padded position changes nothing of row 1
        c = a.clone()
        c[1, 5] = 33
        with torch.no_grad():
            out = model(input_ids=c, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(out[1, :5], bi[0][1, :5])


def test_encoder_only_model_is_refused():
    from transformers import BertConfig, BertModel

    with pytest.raises(EmbedkitError, match="no causal self-attention"):
        make_bidirectional(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=64, vocab_size=50)))
