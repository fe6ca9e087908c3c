"""SMAE: Starbucks masked-autoencoder pre-training of every (layers, dims) size of a BERT encoder.

Zhuang et al. 2024 (arXiv 2410.13230), reference code ``ielab/Starbucks`` (``smae/modelling.py``,
``smae/data.py``). For each ladder size (l, d) the encoder's layer-l hidden states cut to their first
d values go through the MLM head whose first dense layer is sliced to its first d input columns (MLM
loss), and the head's transform of the layer-l, d-dim [CLS] replaces the first position of a more
heavily masked copy of the input fed to a one-layer decoder sharing the embeddings and MLM head (MAE
loss). The loss is the mean over sizes of (MLM + MAE) / 2. Masks: whole words (WordPiece ``##``
continuations stay with their word), encoder rate 0.2, decoder rate 0.4, every encoder-masked word
also masked for the decoder, BERT's 80/10/10 replacement — as the reference's collator.

Deviations: the decoder layer is a copy of the encoder's first layer (the reference re-loads the
pre-trained checkpoint and keeps its first layer: the same weights at the start); the training loop
is a small AdamW loop with linear warm-up and decay and atomic, resumable checkpoints instead of the
Hugging Face Trainer, so a tiny model pre-trains in tests in seconds. Not benchmarked at scale here.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embedkit.errors import RecipeError

__all__ = ["SMAEModel", "smae_collate", "pretrain_smae"]

logger = logging.getLogger(__name__)


class SMAEModel(nn.Module):
    """A ``BertForMaskedLM`` plus a one-layer MAE decoder, with the SMAE loss over a (layers, dims) ladder.

    Args:
        mlm: a transformers ``BertForMaskedLM`` (its ``bert`` is the encoder being pre-trained).
        ladder: (layers, dims) pairs; see :func:`embedkit.training.losses.starbucks.check_ladder`.
    """

    def __init__(self, mlm, ladder: Sequence[Sequence[int]]):
        super().__init__()
        from embedkit.training.losses.starbucks import check_ladder

        self.mlm = mlm
        cfg = mlm.config
        self.ladder = check_ladder(ladder, cfg.num_hidden_layers, cfg.hidden_size)
        self.decoder_layer = copy.deepcopy(mlm.bert.encoder.layer[0])

    def head(self, hidden: torch.Tensor, *, transform_only: bool = False) -> torch.Tensor:
        """The MLM head on d-dim states: dense weight sliced to its first d input columns."""
        pred = self.mlm.cls.predictions
        t = pred.transform
        d = hidden.shape[-1]
        h = t.LayerNorm(t.transform_act_fn(F.linear(hidden, t.dense.weight[:, :d], t.dense.bias)))
        return h if transform_only else pred.decoder(h)

    def _decode(self, cls_state, decoder_input_ids, attention_mask):
        emb = self.mlm.bert.embeddings(input_ids=decoder_input_ids)
        emb = torch.cat([cls_state[:, None, :], emb[:, 1:]], dim=1)
        # additive 4-D padding mask (batch, 1, 1, keys): 0 where attended, a large negative where padded
        ext = (1.0 - attention_mask[:, None, None, :].to(emb.dtype)) * torch.finfo(emb.dtype).min
        out = self.decoder_layer(emb, attention_mask=ext)
        return out[0] if isinstance(out, tuple) else out

    def forward(self, input_ids, attention_mask, labels, decoder_input_ids, decoder_labels) -> torch.Tensor:
        out = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states
        V = self.mlm.config.vocab_size
        total = 0.0
        for layer, dim in self.ladder:
            h = hidden[layer][:, :, :dim]
            mlm_loss = F.cross_entropy(self.head(h).reshape(-1, V), labels.reshape(-1), ignore_index=-100)
            cls_state = self.head(h[:, :1], transform_only=True)[:, 0]
            dec = self._decode(cls_state, decoder_input_ids, attention_mask)
            mae_loss = F.cross_entropy(self.mlm.cls.predictions.decoder(
                self.mlm.cls.predictions.transform(dec)).reshape(-1, V), decoder_labels.reshape(-1), ignore_index=-100)
            total = total + (mlm_loss + mae_loss) / 2
        return total / len(self.ladder)


def _word_groups(tokens: Sequence[str], specials: set[str]) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, tok in enumerate(tokens):
        if tok in specials:
            continue
        if groups and tok.startswith("##"):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _replace(ids: torch.Tensor, mask: torch.Tensor, tokenizer, gen: torch.Generator):
    labels = torch.where(mask, ids, torch.full_like(ids, -100))
    ids = ids.clone()
    r = torch.rand(ids.shape, generator=gen)
    ids[mask & (r < 0.8)] = tokenizer.mask_token_id
    rnd = mask & (r >= 0.8) & (r < 0.9)
    ids[rnd] = torch.randint(len(tokenizer), ids.shape, generator=gen)[rnd]
    return ids, labels


def smae_collate(texts: Sequence[str], tokenizer, *, max_length: int = 128, encoder_rate: float = 0.2,
                 decoder_rate: float = 0.4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` and draw the encoder and decoder whole-word masks (encoder words within decoder words)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids = batch["input_ids"]
    specials = set(tokenizer.all_special_tokens)
    enc = torch.zeros_like(ids, dtype=torch.bool)
    dec = torch.zeros_like(ids, dtype=torch.bool)
    for row in range(ids.shape[0]):
        toks = tokenizer.convert_ids_to_tokens(ids[row].tolist())
        n = int(batch["attention_mask"][row].sum())
        groups = _word_groups(toks[:n], specials)
        rng.shuffle(groups)
        n_enc = max(1, round(n * encoder_rate))
        n_dec = max(1, round(n * decoder_rate))
        e = d = 0
        for g in groups:
            if d + len(g) > n_dec:
                continue
            d += len(g)
            dec[row, g] = True
            if e + len(g) <= n_enc:
                e += len(g)
                enc[row, g] = True
    input_ids, labels = _replace(ids, enc, tokenizer, gen)
    decoder_input_ids, decoder_labels = _replace(ids, dec, tokenizer, gen)
    return {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "labels": labels,
            "decoder_input_ids": decoder_input_ids, "decoder_labels": decoder_labels}


def _load_mlm(model_path: str):
    """A BertForMaskedLM from a transformers folder or the Transformer module of a sentence-transformers folder."""
    from transformers import AutoTokenizer, BertForMaskedLM

    p = Path(model_path)
    if (p / "modules.json").is_file():  # sentence-transformers folder: its first module holds the HF model
        mods = json.loads((p / "modules.json").read_text())
        sub = next((m.get("path", "") for m in mods if m.get("type", "").endswith("Transformer")), "")
        p = p / sub if sub else p
    tok = AutoTokenizer.from_pretrained(str(p))
    mlm = BertForMaskedLM.from_pretrained(str(p))  # an encoder-only checkpoint gets a fresh MLM head
    if tok.mask_token_id is None:
        raise RecipeError(f"model {model_path!r}: its tokenizer has no mask token; SMAE needs a BERT-style MLM tokenizer")
    return mlm, tok


def pretrain_smae(model_path: str, texts: Sequence[str], out: str | os.PathLike, *, ladder=None, steps: int = 1000,
                  batch_size: int = 32, learning_rate: float = 1e-4, weight_decay: float = 0.001,
                  warmup_ratio: float = 0.05, max_length: int = 128, seed: int = 42, save_every: int = 100,
                  resume: bool = False, overwrite: bool = False, pooling: str = "cls",
                  _stop_after: int | None = None) -> Path | None:
    """Pre-train ``model_path`` with SMAE on ``texts``; write a sentence-transformers folder to ``out``.

    Checkpoints (model, decoder, optimiser, step) are written atomically to ``out/checkpoint`` every
    ``save_every`` steps; ``resume=True`` continues from there. The result is ``out/final``:
    Transformer + ``pooling`` (``cls`` as the paper's retrieval models, or ``mean``) + Normalize.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from embedkit._io import atomic_directory, mark_output, prepare_output
    from embedkit.training.losses.starbucks import default_ladder

    out = Path(out)
    ckpt = out / "checkpoint"
    if not (resume and ckpt.is_dir()):
        prepare_output(out, "run", overwrite=overwrite)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise RecipeError("SMAE: no non-empty training texts")
    torch.manual_seed(seed)
    mlm, tok = _load_mlm(str(ckpt / "mlm") if resume and ckpt.is_dir() else str(model_path))
    cfg = mlm.config
    model = SMAEModel(mlm, ladder or default_ladder(cfg.num_hidden_layers, cfg.hidden_size))
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    warm = max(1, int(warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    start = 0
    if resume and ckpt.is_dir():
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        model.decoder_layer.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
        torch.set_rng_state(state["torch_rng"])  # dropout draws continue exactly where they stopped
        logger.info("SMAE: resuming at step %d", start)
    perm = list(range(len(texts)))
    random.Random(seed).shuffle(perm)  # a fixed order, so a resumed run sees the same batches
    model.train()
    for step in range(start, steps):
        idx = [perm[(step * batch_size + i) % len(texts)] for i in range(batch_size)]
        batch = smae_collate([texts[i] for i in idx], tok, max_length=max_length, seed=seed * 1_000_003 + step)
        loss = model(**batch)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % max(1, save_every) == 0 or step + 1 == steps:
            with atomic_directory(ckpt) as tmp:
                model.mlm.save_pretrained(str(tmp / "mlm"))
                tok.save_pretrained(str(tmp / "mlm"))
                torch.save({"decoder": model.decoder_layer.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "step": step + 1,
                            "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
            logger.info("SMAE step %d/%d loss %.4f", step + 1, steps, float(loss.detach()))
        if _stop_after is not None and step + 1 >= _stop_after:  # tests: an interruption after a checkpoint
            return None
    final = out / "final"
    with atomic_directory(final) as tmp:
        hf = tmp / "_hf"
        model.mlm.bert.save_pretrained(str(hf))
        tok.save_pretrained(str(hf))
        tr = Transformer(str(hf), max_seq_length=max_length)
        st = SentenceTransformer(modules=[tr, Pooling(cfg.hidden_size, pooling), Normalize()], device="cpu")
        st.save(str(tmp / "st"))
        for p in (tmp / "st").iterdir():
            os.replace(p, tmp / p.name)
        import shutil

        shutil.rmtree(tmp / "st")
        shutil.rmtree(hf)
        mark_output(tmp, "model")
    (out / "embedkit-output.json").exists() or mark_output(out, "run")
    return final
