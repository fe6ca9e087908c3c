"""ESimCSE (Wu et al., COLING 2022): word repetition + a momentum-encoder queue of negatives.

Faithful to the reference code (caskcsg/sentemb, ``ESimCSE/esimcse/{models,trainers}.py``,
``ESimCSE/train.py``):

* positive pair (x, x_rep): the *second* view gets word repetition on subword tokens
  (:func:`embedkit.training.augment.word_repetition`, dup_rate 0.32, at most 10 tokens); dropout
  stays on for both views (one forward pass per view);
* a momentum encoder f_m, a copy of the model, updated by EMA ``theta_m <- lambda * theta_m +
  (1 - lambda) * theta`` (lambda 0.995) once per optimizer step, without gradients;
* a FIFO queue of the momentum encoder's eval-mode (no dropout) embeddings of the *first* view of
  past batches, ``queue_size`` = 2.5 x batch size by default (160 for batch 64 as in run.sh); the
  current batch is enqueued after its loss is computed, so it is never its own negative;
* one-directional InfoNCE of the first view over ``[in-batch positives | queue]`` at tau = 0.05;
* the queue is emptied at the start of every epoch (the reference trainer sets ``pre_z1 = None``
  in its epoch loop): entries from the previous epoch would be the same sentences as the coming
  batches, i.e. false negatives of themselves.

Where the EMA happens: the reference applies it inside the training forward, before the momentum
embeddings of the batch are computed, i.e. once per step with the weights left by the previous
optimizer step. Here :class:`MomentumUpdateCallback` (added automatically by
:class:`embedkit.training.trainer.EmbedkitTrainer`, or pass ``callbacks=loss.callbacks()`` to a plain
``SentenceTransformerTrainer``) applies it in ``on_step_end``, after every optimizer step, which is
the same sequence of weights and stays correct with gradient accumulation. Without the callback
the loss falls back to the reference behaviour (EMA at the start of each training forward).

Deviations (documented): the momentum encoder is a copy of the whole sentence-transformers model
(transformer + pooling + normalisation), so queue entries and anchors live in the same space; the
reference copies only the BERT body, while its anchors pass an MLP head used in training only.
Under multi-process training (torchrun / DDP) the loss gathers the second views of every rank
(gradient kept on each rank's own rows) and the momentum encoder's embeddings of every rank, in rank
order, so every rank holds the same queue of ``queue_factor`` x the *global* batch and the momentum
encoders stay identical (same weights after every DDP step, same EMA): 2 processes x batch B train
like 1 process x batch 2B. With ``gather_across_devices=False`` each process keeps its own queue of
its own batches, as the reference does (then only rank 0's queue is saved in checkpoints).
The momentum encoder and the queue are saved with every checkpoint
(:meth:`ESimCSELoss.save_training_state`) so that resumed runs are exact (the reference starts a
resumed run with an empty queue); the restored queue is moved to the model's device and dtype.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from embedkit.training.augment import word_repetition
from embedkit.training.losses.simcse import _embed_views, gathered_info_nce

STATE_FILE = "esimcse_state.safetensors"
STATE_META = "esimcse_state.json"


class ESimCSELoss(nn.Module):
    """ESimCSE loss for the sentence-transformers trainer.

    Args:
        model: the SentenceTransformer being trained.
        temperature: InfoNCE temperature (0.05).
        dup_rate: word-repetition rate (0.32 for BERT-base in the paper's run.sh).
        max_dup: cap on repeated tokens per sentence (10 in the reference code).
        momentum: EMA coefficient lambda of the momentum encoder (0.995).
        queue_size: number of queued negatives; ``None`` = ``queue_factor`` x the first batch size.
        queue_factor: 2.5 by default.
        gather_across_devices: under multi-process training, use every rank's sentences as in-batch
            negatives and fill the queue from every rank (the default). No effect in one process.

    Inputs:
        +-------------------------------------+--------+
        | Texts                               | Labels |
        +=====================================+========+
        | (sentence) or (sentence, sentence)  | none   |
        +-------------------------------------+--------+

        With one column the second view is the same tokenised sentence; with two columns the
        second column is the second view. Word repetition is applied to the second view only.

    Example:
        .. code-block:: python

            loss = ESimCSELoss(model)
            trainer = SentenceTransformerTrainer(model=model, train_dataset=ds, loss=loss,
                                                 callbacks=loss.callbacks())
    """

    def __init__(self, model, temperature: float = 0.05, dup_rate: float = 0.32, max_dup: int = 10,
                 momentum: float = 0.995, queue_size: int | None = None, queue_factor: float = 2.5,
                 gather_across_devices: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not 0.0 <= dup_rate <= 1.0:
            raise ValueError(f"dup_rate must be in [0, 1], got {dup_rate}")
        if queue_size is not None and queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.model = model
        self.temperature = float(temperature)
        self.dup_rate = float(dup_rate)
        self.max_dup = int(max_dup)
        self.momentum = float(momentum)
        self.queue_size = None if queue_size is None else int(queue_size)
        self.queue_factor = float(queue_factor)
        self.gather_across_devices = bool(gather_across_devices)
        # Kept outside the nn.Module tree on purpose: the trainer must neither optimise it nor swap
        # its inner modules for the (possibly DDP-wrapped) training model.
        momentum_model = copy.deepcopy(model)
        for p in momentum_model.parameters():
            p.requires_grad_(False)
        momentum_model.eval()
        object.__setattr__(self, "_momentum_model", momentum_model)
        self.queue: Tensor | None = None
        self.ema_steps = 0
        self.ema_by_callback = False
        tok = getattr(model, "tokenizer", None)
        self._special_ids = sorted(set(getattr(tok, "all_special_ids", []) or []))
        self._pad_id = getattr(tok, "pad_token_id", None) or 0

    # --- momentum encoder -------------------------------------------------------------------
    @property
    def momentum_model(self):
        return self._momentum_model

    def _base_model(self):
        m = self.model
        return getattr(m, "module", m)  # unwrap DDP

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_m <- momentum * theta_m + (1 - momentum) * theta, for every parameter and float buffer."""
        src = dict(self._base_model().named_parameters())
        for name, p_m in self._momentum_model.named_parameters():
            p = src[name]
            if p_m.device != p.device:
                p_m.data = p_m.data.to(p.device)
            p_m.mul_(self.momentum).add_(p.detach().to(p_m.dtype), alpha=1.0 - self.momentum)
        self.ema_steps += 1

    def callbacks(self) -> list:
        """Trainer callbacks this loss needs (the per-optimizer-step EMA update)."""
        return [MomentumUpdateCallback(self)]

    # --- queue --------------------------------------------------------------------------------
    def _model_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Device and floating dtype of the model being trained (CPU float32 for a model without parameters)."""
        for p in self._base_model().parameters():
            if p.is_floating_point():
                return p.device, p.dtype
        return torch.device("cpu"), torch.float32

    def reset_queue(self) -> None:
        """Empty the negatives queue (done at the start of every epoch, as in the reference)."""
        self.queue = None

    def enqueue(self, embeddings: Tensor) -> None:
        """Append ``embeddings`` (oldest first) and keep the newest ``queue_size`` rows (FIFO)."""
        emb = embeddings.detach()
        if self.queue_size is None:
            self.queue_size = int(round(self.queue_factor * emb.shape[0]))
        if self.queue_size == 0:
            return
        q = emb if self.queue is None else torch.cat([self.queue.to(emb.device), emb], dim=0)
        self.queue = q[-self.queue_size:].clone()

    # --- forward ------------------------------------------------------------------------------
    def repeat_words(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        limit = None
        try:
            limit = int(self._base_model()[0].auto_model.config.max_position_embeddings)
        except (AttributeError, TypeError, IndexError, KeyError):
            pass
        return word_repetition(features, special_ids=self._special_ids, pad_id=self._pad_id, dup_rate=self.dup_rate,
                               max_dup=self.max_dup, max_length=limit)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        feats = list(sentence_features)
        first = feats[0]
        second = feats[1] if len(feats) > 1 else first
        training = self._base_model().training
        second = self.repeat_words(second) if training else dict(second)
        if training:
            # the views have different widths after repetition: two forwards avoid padding the first
            # view to the second's width (measured faster on CPU than one merged, padded forward)
            z1 = self.model(first)["sentence_embedding"]
            z2 = self.model(second)["sentence_embedding"]
        else:
            z1, z2 = _embed_views(self.model, [first, second])
        queue = self.queue
        if queue is not None and queue.device != z1.device:
            queue = self.queue = queue.to(z1.device)
        loss = gathered_info_nce(z1, z2, self.temperature, queue, gather=self.gather_across_devices)
        if training:
            if not self.ema_by_callback:
                self.momentum_update()  # reference behaviour when no trainer callback drives the EMA
            self._momentum_model.eval()
            with torch.no_grad():
                mom = self._momentum_model.to(z1.device)(first)["sentence_embedding"]
                if self.gather_across_devices:
                    from embedkit.training.distributed import all_gather

                    mom = all_gather(mom)  # every rank's batch, in rank order: the same queue everywhere
            self.enqueue(mom)
        return loss

    # --- checkpointing ------------------------------------------------------------------------
    def save_training_state(self, folder: str | os.PathLike) -> None:
        """Write the momentum encoder weights and the queue into ``folder`` (a checkpoint)."""
        from safetensors.torch import save_file

        from embedkit.training.distributed import world_size

        tensors = {f"momentum.{k}": v.detach().cpu().contiguous() for k, v in self._momentum_model.state_dict().items()}
        if self.queue is not None:
            tensors["queue"] = self.queue.detach().cpu().contiguous()
        save_file(tensors, os.path.join(folder, STATE_FILE))
        with open(os.path.join(folder, STATE_META), "w") as f:
            json.dump({"queue_size": self.queue_size, "ema_steps": self.ema_steps,
                       "gather_across_devices": self.gather_across_devices, "world_size": world_size()}, f)

    def load_training_state(self, folder: str | os.PathLike) -> bool:
        """Restore what :meth:`save_training_state` wrote; returns False if ``folder`` has none."""
        from safetensors.torch import load_file

        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            return False
        tensors = load_file(path)
        mom = {k[len("momentum."):]: v for k, v in tensors.items() if k.startswith("momentum.")}
        self._momentum_model.load_state_dict(mom)
        queue = tensors.get("queue")
        if queue is not None:  # safetensors loads on the CPU: follow the model (e.g. onto the GPU)
            device, dtype = self._model_device_dtype()
            queue = queue.to(device=device, dtype=dtype)
        self.queue = queue
        meta_path = os.path.join(folder, STATE_META)
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
            self.queue_size = meta.get("queue_size", self.queue_size)
            self.ema_steps = int(meta.get("ema_steps", 0))
        return True

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "dup_rate": self.dup_rate, "max_dup": self.max_dup,
                "momentum": self.momentum, "queue_size": self.queue_size, "queue_factor": self.queue_factor,
                "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return """@inproceedings{wu2022esimcse,
    title={{ESimCSE}: Enhanced Sample Building Method for Contrastive Learning of Unsupervised Sentence Embedding},
    author={Wu, Xing and Gao, Chaochen and Zang, Liangjun and Han, Jizhong and Wang, Zhongyuan and Hu, Songlin},
    booktitle={COLING},
    year={2022}
}"""


def _transformers_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class MomentumUpdateCallback(_transformers_callback_base()):
    """Applies :meth:`ESimCSELoss.momentum_update` after every optimizer step and empties the queue
    when a new epoch starts (not when a resumed run re-enters an epoch in the middle)."""

    def __init__(self, loss: ESimCSELoss) -> None:
        self.loss = loss

    def on_train_begin(self, args, state, control, **kwargs):
        self.loss.ema_by_callback = True

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = float(state.epoch or 0.0)
        if abs(epoch - round(epoch)) < 1e-9:  # a fresh epoch; a resumed one starts at a fraction
            self.loss.reset_queue()

    def on_step_end(self, args, state, control, **kwargs):
        self.loss.momentum_update()
