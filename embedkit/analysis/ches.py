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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from embedkit.errors import DataFormatError, EmbedkitError

__all__ = ["PreferencePair", "read_preference_pairs", "ches_scores", "top_ches"]

REQUIRED = ("prompt", "chosen", "rejected")


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


def read_preference_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Read JSONL with one ``{"prompt", "chosen", "rejected"}`` object per line (extra fields ignored).

    Raises:
        DataFormatError: missing file, bad JSON, a missing/empty/non-string field (file:line named).
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: file not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path.name}:{n}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path.name}:{n}: expected a JSON object with fields {', '.join(REQUIRED)}")
            for k in REQUIRED:
                if k not in obj:
                    raise DataFormatError(f"{path.name}:{n}: missing field {k!r} (each line needs {', '.join(REQUIRED)})")
                if not isinstance(obj[k], str) or (k != "prompt" and not obj[k].strip()):
                    raise DataFormatError(f"{path.name}:{n}: field {k!r} must be a non-empty string")
            out.append(PreferencePair(obj["prompt"], obj["chosen"], obj["rejected"]))
    if not out:
        raise DataFormatError(f"{path.name}: no preference pairs found")
    return out


def _encode(tokenizer, prompt: str, response: str, add_special_tokens: bool) -> tuple[list[int], int]:
    p = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"] if prompt else []
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not p:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise EmbedkitError("CHES: an empty prompt needs a tokenizer with a BOS token (nothing predicts the first token)")
        p = [bos]
    if not r:
        raise EmbedkitError(f"CHES: response {response!r} tokenises to nothing")
    return list(p) + list(r), len(p)


def _response_hidden_sums(model, tokenizer, items, batch_size, max_length, add_special_tokens, device):
    """For each (prompt, response): (sum of predicting hidden states, number of response tokens)."""
    import torch

    enc = [_encode(tokenizer, p, r, add_special_tokens) for p, r in items]
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
                device: str | None = None) -> dict[str, np.ndarray]:
    """CHES and length-normalised CHES for each preference pair.

    Args:
        model: a transformers causal LM (anything returning ``hidden_states`` with
            ``output_hidden_states=True``), in eval mode.
        tokenizer: its tokenizer.
        pairs: PreferencePair objects or (prompt, chosen, rejected) tuples.
        batch_size: pairs per forward pass (results do not depend on it).
        max_length: truncate prompt+response to this many tokens (None = no truncation).

    Returns:
        ``{"ches": (n,), "ches_normalized": (n,), "chosen_tokens": (n,), "rejected_tokens": (n,)}``.

    Example:
        >>> scores = ches_scores(lm, tok, [("Q: 2+2?", "4", "5")])   # doctest: +SKIP
        >>> scores["ches"].shape
        (1,)

    References:
        Razin, Malladi, Bhaskar, Chen, Arora, Hanin. "Unintentional Unalignment: Likelihood
        Displacement in Direct Preference Optimization." ICLR 2025, arXiv 2410.08847.
    """
    pairs = [p if isinstance(p, PreferencePair) else PreferencePair(*p) for p in pairs]
    if not pairs:
        raise EmbedkitError("CHES: no preference pairs given")
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = "cpu"
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        Sp, np_ = _response_hidden_sums(model, tokenizer, [(p.prompt, p.chosen) for p in pairs], batch_size, max_length,
                                        add_special_tokens, device)
        Sm, nm = _response_hidden_sums(model, tokenizer, [(p.prompt, p.rejected) for p in pairs], batch_size, max_length,
                                       add_special_tokens, device)
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
