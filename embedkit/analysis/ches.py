"""CHES: centred hidden embedding similarity of preference pairs (Razin et al., ICLR 2025, arXiv 2410.08847).

For a prompt x, a preferred response y+ and a dispreferred y-, let h(x, y_<k) be the last-layer
hidden state that produces the logits of response token y_k (positions: last prompt token ...
second-to-last response token). With S+ = sum_k h(x, y+_<k) and S- = sum_k h(x, y-_<k):

    CHES(x, y+, y-) = <S+, S->  -  ||S+||^2

and the length-normalised variant replaces each sum by the mean over its response length. High
CHES means DPO on this pair is likely to *lower* the likelihood of the preferred response
("likelihood displacement"); the paper filters the highest-CHES pairs.

Padding-aware: pairs are batched with right padding and an attention mask, and only the positions
above count, so a batched result equals a one-example-at-a-time loop (the reference script reads
lengths from the tensor width and assumes no padding). The prompt and the response are tokenised
separately and concatenated, so the boundary is exact; no special tokens are added unless
``add_special_tokens=True`` (the prompt then gets the tokenizer's BOS handling).

End of sequence: as in the reference implementation, whose responses end with the EOS token, the
response is followed by EOS (unless it already ends with it), so the hidden state that predicts EOS
— the one at the last response token — is part of the sum and EOS counts in the response length.
``include_eos=False`` leaves it out (the sum then covers only the response's own tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from embedkit.data.preferences import PreferencePair, read_preference_pairs
from embedkit.errors import EmbedkitError

__all__ = ["PreferencePair", "read_preference_pairs", "ches_scores", "top_ches"]


def _eos_id(model, tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
    if eos is None:
        raise EmbedkitError("CHES: include_eos=True needs an EOS token (neither the tokenizer nor the model config "
                            "names one); pass include_eos=False")
    return int(eos)


def _encode(tokenizer, prompt: str, response: str, add_special_tokens: bool,
            eos: int | None = None) -> tuple[list[int], int]:
    p = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"] if prompt else []
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not p:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise EmbedkitError("CHES: an empty prompt needs a tokenizer with a BOS token (nothing predicts the first token)")
        p = [bos]
    if not r:
        raise EmbedkitError(f"CHES: response {response!r} tokenises to nothing")
    r = list(r)
    if eos is not None and r[-1] != eos:
        r.append(eos)
    return list(p) + r, len(p)


def _response_hidden_sums(model, tokenizer, items, batch_size, max_length, add_special_tokens, device, eos=None):
    """For each (prompt, response): (sum of predicting hidden states, number of response tokens)."""
    import torch

    enc = [_encode(tokenizer, p, r, add_special_tokens, eos) for p, r in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    sums, counts = [], []
    for s in range(0, len(enc), batch_size):
        chunk = enc[s : s + batch_size]
        ids = [e[0][:max_length] if max_length else e[0] for e in chunk]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        with torch.no_grad():
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        H = out.hidden_states[-1].float().cpu()
        # position j predicts token j+1: response tokens at [P, len) are predicted from [P-1, len-1)
        sel = torch.zeros((len(ids), width), dtype=H.dtype)
        for i, ((_, plen), x) in enumerate(zip(chunk, ids)):
            if len(x) <= plen:
                raise EmbedkitError(f"CHES: max_length={max_length} truncates the whole response of item {s + i}")
            sel[i, plen - 1 : len(x) - 1] = 1
        sums.append(torch.einsum("bt,btd->bd", sel, H).double().numpy())
        counts.append(sel.sum(dim=1).double().numpy())
    return np.concatenate(sums), np.concatenate(counts)


def ches_scores(model, tokenizer, pairs: Sequence[PreferencePair] | Iterable[tuple[str, str, str]], *,
                batch_size: int = 8, max_length: int | None = None, add_special_tokens: bool = False,
                include_eos: bool = True, device: str | None = None) -> dict[str, np.ndarray]:
    """CHES and length-normalised CHES for each preference pair.

    Args:
        model: a transformers causal LM (anything returning ``hidden_states`` with
            ``output_hidden_states=True``), in eval mode.
        tokenizer: its tokenizer.
        pairs: PreferencePair objects or (prompt, chosen, rejected) tuples.
        batch_size: pairs per forward pass (results do not depend on it).
        max_length: truncate prompt+response to this many tokens (None = no truncation).
        add_special_tokens: let the tokenizer add its special tokens (BOS) to the prompt.
        include_eos: end each response with the EOS token (the tokenizer's, else the model
            config's), as the reference does, so the position predicting EOS counts.
        device: where to run the model (default: the device of its parameters).

    Returns:
        ``{"ches": (n,), "ches_normalized": (n,), "chosen_tokens": (n,), "rejected_tokens": (n,)}``;
        the token counts include EOS when ``include_eos``.

    Example:
        .. code-block:: python

            from transformers import AutoModelForCausalLM, AutoTokenizer

            lm, tok = AutoModelForCausalLM.from_pretrained("gpt2"), AutoTokenizer.from_pretrained("gpt2")
            scores = ches_scores(lm, tok, [("Q: 2+2?", "4", "5")])
            scores["ches"].shape  # (1,)

    References:
        Razin, Malladi, Bhaskar, Chen, Arora, Hanin. "Unintentional Unalignment: Likelihood
        Displacement in Direct Preference Optimization." ICLR 2025, arXiv 2410.08847.
    """
    pairs = [p if isinstance(p, PreferencePair) else PreferencePair(*p) for p in pairs]
    if not pairs:
        raise EmbedkitError("CHES: no preference pairs given")
    eos = _eos_id(model, tokenizer) if include_eos else None
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = "cpu"
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        Sp, np_ = _response_hidden_sums(model, tokenizer, [(p.prompt, p.chosen) for p in pairs], batch_size, max_length,
                                        add_special_tokens, device, eos)
        Sm, nm = _response_hidden_sums(model, tokenizer, [(p.prompt, p.rejected) for p in pairs], batch_size, max_length,
                                       add_special_tokens, device, eos)
    finally:
        if was_training:
            model.train()
    ches = np.einsum("nd,nd->n", Sp, Sm) - np.einsum("nd,nd->n", Sp, Sp)
    Mp, Mm = Sp / np_[:, None], Sm / nm[:, None]
    ches_n = np.einsum("nd,nd->n", Mp, Mm) - np.einsum("nd,nd->n", Mp, Mp)
    return {"ches": ches, "ches_normalized": ches_n, "chosen_tokens": np_.astype(int), "rejected_tokens": nm.astype(int)}


def top_ches(scores: np.ndarray, top: float | int) -> np.ndarray:
    """Indices of the highest scores: ``top`` < 1 is a fraction (0.05 = top 5%), else a count; descending."""
    scores = np.asarray(scores)
    k = int(np.ceil(top * len(scores))) if 0 < top < 1 else int(top)
    if k <= 0:
        raise EmbedkitError(f"top={top!r}: must be a positive count or a fraction in (0, 1)")
    return np.argsort(-scores, kind="stable")[: min(k, len(scores))]
