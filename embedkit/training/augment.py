"""Token-level augmentations for contrastive training.

:func:`word_repetition` is ESimCSE's positive-pair construction ("word repetition", Wu et al.
2022), faithful to the reference code (caskcsg/sentemb, ``ESimCSE/train.py``, ``dup_type="bpe"``):

* it works on *subword* token ids after tokenisation (so it needs no knowledge of words);
* for a sequence of ``N`` real tokens (special tokens included, padding excluded) the number of
  repeated tokens is drawn uniformly from ``[0, min(max_dup, int(dup_rate * N)))``; when
  ``int(dup_rate * N) == 0`` nothing is repeated;
* the positions are drawn uniformly without replacement among the non-special tokens (the
  reference samples from positions ``1 .. N-2``, i.e. everything but [CLS] and the final [SEP];
  here any token whose id is a special token is excluded, which is the same set for BERT-style
  tokenizers and also safe for tokenizers with more specials);
* each chosen token is duplicated in place (``a b c`` -> ``a b b c``), so the sequence only grows.

Deviation from the reference: the reference leaves sequences longer than ``max_seq_length`` after
repetition; we do the same, but never beyond ``max_length`` when it is given (the model's
position-embedding limit), cutting tokens before the final special token so [SEP] stays last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def repetition_count_bound(n_tokens: int, dup_rate: float = 0.32, max_dup: int = 10) -> int:
    """Exclusive upper bound of the number of repeated tokens for a sequence of ``n_tokens``."""
    return min(max_dup, int(dup_rate * n_tokens))


def repeat_tokens(
    ids: Sequence[int],
    *,
    dup_rate: float = 0.32,
    max_dup: int = 10,
    special_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[int]]:
    """Word repetition on one unpadded sequence of token ids.

    Returns:
        (new_ids, source_positions): the augmented ids and, for each output token, the index of the
        input token it copies (so callers can carry token_type_ids or check invariants).
    """
    ids = list(ids)
    n = len(ids)
    bound = repetition_count_bound(n, dup_rate, max_dup)
    special = set(int(s) for s in special_ids)
    candidates = [i for i, t in enumerate(ids) if int(t) not in special]
    if bound <= 0 or not candidates:
        return ids, list(range(n))
    k = int(torch.randint(0, bound, (1,), generator=generator).item())
    k = min(k, len(candidates))
    if k == 0:
        return ids, list(range(n))
    perm = torch.randperm(len(candidates), generator=generator)[:k].tolist()
    chosen = {candidates[j] for j in perm}
    out, src = [], []
    for i, t in enumerate(ids):
        if i in chosen:
            out.append(t)
            src.append(i)
        out.append(t)
        src.append(i)
    return out, src


def word_repetition(
    features: dict[str, torch.Tensor],
    *,
    special_ids: Iterable[int],
    pad_id: int = 0,
    dup_rate: float = 0.32,
    max_dup: int = 10,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Apply :func:`repeat_tokens` to every row of a padded, tokenised batch.

    Args:
        features: a sentence-transformers feature dict with ``input_ids`` and ``attention_mask``
            (right padding), optionally ``token_type_ids``; other keys are copied unchanged.
        special_ids: token ids that are never repeated ([CLS], [SEP], [PAD], ...).
        pad_id: id used to re-pad the batch to its new longest row.
        max_length: optional hard limit on the output length (e.g. the position-embedding limit).
        generator: torch random generator; ``None`` uses the global torch RNG (which the trainer
            checkpoints, so resumed runs draw the same repetitions).

    Returns:
        a new feature dict; the input tensors are not modified.
    """
    input_ids = features["input_ids"]
    mask = features["attention_mask"]
    tti = features.get("token_type_ids")
    special = [int(s) for s in special_ids]
    rows_ids, rows_tti = [], []
    for r in range(input_ids.shape[0]):
        n = int(mask[r].sum().item())
        ids = input_ids[r, :n].tolist()
        new, src = repeat_tokens(ids, dup_rate=dup_rate, max_dup=max_dup, special_ids=special, generator=generator)
        if max_length is not None and len(new) > max_length:
            # keep the tail special token (e.g. [SEP]) last
            if new and new[-1] in special:
                new, src = new[: max_length - 1] + new[-1:], src[: max_length - 1] + src[-1:]
            else:
                new, src = new[:max_length], src[:max_length]
        rows_ids.append(new)
        if tti is not None:
            rows_tti.append([int(tti[r, s]) for s in src])
    width = max(len(r) for r in rows_ids) if rows_ids else 0
    out = dict(features)
    new_ids = torch.full((len(rows_ids), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    new_mask = torch.zeros((len(rows_ids), width), dtype=mask.dtype, device=mask.device)
    for r, row in enumerate(rows_ids):
        new_ids[r, : len(row)] = torch.tensor(row, dtype=input_ids.dtype)
        new_mask[r, : len(row)] = 1
    out["input_ids"] = new_ids
    out["attention_mask"] = new_mask
    if tti is not None:
        new_tti = torch.zeros((len(rows_ids), width), dtype=tti.dtype, device=tti.device)
        for r, row in enumerate(rows_tti):
            new_tti[r, : len(row)] = torch.tensor(row, dtype=tti.dtype)
        out["token_type_ids"] = new_tti
    return out
