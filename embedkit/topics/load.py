"""Loading a saved Lbl2Vec folder of either kind: the one place that knows both classes.

:mod:`embedkit.topics.base` knows nothing of its subclasses; this module maps the ``kind`` stored in a
folder to :class:`~embedkit.topics.doc2vec.Lbl2Vec` or :class:`~embedkit.topics.transformer.Lbl2TransformerVec`.
"""

from __future__ import annotations

import os

from embedkit.errors import DataFormatError, EmbedkitError
from embedkit.topics.base import read_manifest
from embedkit.topics.doc2vec import Lbl2Vec
from embedkit.topics.transformer import Lbl2TransformerVec

__all__ = ["KINDS", "load_lbl2vec", "model_kind"]

#: the ``kind`` stored in a saved folder -> the class that loads it
KINDS: dict[str, type] = {Lbl2Vec._kind: Lbl2Vec, Lbl2TransformerVec._kind: Lbl2TransformerVec}


def model_kind(path: str | os.PathLike) -> str:
    """The kind of saved Lbl2Vec model at ``path``: ``"doc2vec"`` or ``"transformer"``."""
    _, manifest = read_manifest(path)
    return str(manifest.get("kind"))


def load_lbl2vec(path: str | os.PathLike, **kwargs):
    """Load a folder written by :meth:`Lbl2Vec.save` or :meth:`Lbl2TransformerVec.save`.

    Keyword arguments go to that class's ``load``: ``tokenizer=`` for a Doc2Vec model,
    ``model=`` and ``force=`` for a transformer model (``model=None`` means the stored encoder).
    """
    _, manifest = read_manifest(path)
    cls = KINDS.get(manifest.get("kind"))
    if cls is None:
        raise DataFormatError(f"{path}: unknown model kind {manifest.get('kind')!r}")
    if cls._kind == "doc2vec":
        if kwargs.get("model") is not None:
            raise EmbedkitError(f"{path}: a Doc2Vec Lbl2Vec model has its own vectors; --model/model= applies "
                                "to transformer models only")
        kwargs.pop("model", None)
        kwargs.pop("force", None)
    return cls.load(path, **kwargs)
