"""sentence-transformers' ``Matryoshka2dLoss`` (2DMSE) on embedkit's definition of the layer-L embedding.

sentence-transformers trains layer L on the raw ``hidden_states[L]`` Hugging Face returns; for a
pre-norm backbone (Llama, Qwen3, GPT-2, ...) those lack the final norm that the first-L-layers
sub-model applies (:mod:`embedkit.models.submodel`), so what was trained and what ``--layers L``
serves would differ. This subclass runs the same loss with the final norm applied at every layer
(:func:`~embedkit.models.submodel.every_layer_normed`); for BERT-style models it is the original loss.
"""

from __future__ import annotations

from collections.abc import Iterable

from sentence_transformers.sentence_transformer.losses import Matryoshka2dLoss as _STMatryoshka2dLoss
from torch import Tensor

__all__ = ["Matryoshka2dLoss"]


class Matryoshka2dLoss(_STMatryoshka2dLoss):
    """``sentence_transformers`` ``Matryoshka2dLoss`` with every layer's states normed as the sub-model norms them.

    Same arguments as the original; works under DistributedDataParallel as the original does.
    """

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from embedkit.models.submodel import every_layer_normed

        with every_layer_normed(self.model):
            return super().forward(sentence_features, labels)
