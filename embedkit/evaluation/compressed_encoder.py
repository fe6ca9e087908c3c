"""An mteb encoder that encodes every text once and scores it under any compression spec.

Two pieces:

* :class:`EmbeddingStore` — the float embeddings of one evaluation run. A text is looked up in
  memory first, then in the on-disk embedding cache (:func:`embedkit.cache.encode_cached`); only
  texts found in neither are encoded by the model. The store also remembers, per task, which texts
  the task encoded and in which role (query, document, or plain text): that is the sample a
  compression spec is fitted on.
* :class:`CompressedEncoder` — implements mteb's encoder protocol
  (``encode(inputs: DataLoader, *, task_metadata, hf_split, hf_subset, prompt_type)``) on top of a
  store and one compression spec. It returns the *decoded* compressed vectors, so every similarity
  mteb computes (cosine for STS and retrieval, the classifier's features, k-means' distances) runs
  on what the compressed representation keeps:

  ============  ===============================================================================
  spec          vectors mteb sees
  ============  ===============================================================================
  ``float``     the model's float32 output, untouched (scores equal a plain mteb run)
  ``f16``       float16-rounded vectors
  ``int8``      per-dimension 256-level reconstruction (range = min/max over the fit sample)
  ``binary``    the +-1 sign vectors; their cosine is ``1 - 2 * hamming / dim``, the score an
                embedkit binary index ranks by
  ``mrl:D``     the first D dimensions, renormalised to unit length
  ``mrl:D,Q``   truncation, then quantizer Q on the truncated vectors
  others        ``decode(encode(x))`` of the quantizer (pq, opq, lsh, itq, rabitq, bebr, ...)
  ============  ===============================================================================

  By default queries are compressed like documents (symmetric). With
  ``asymmetric_queries=True`` a retrieval task's queries only go through the float transforms
  (e.g. the MRL truncation) and are scored against compressed documents, as embedkit's
  float-codec indexes (float, f16, int8, pq) search.

Fitting: a spec's pipeline is fitted once per task, on the float embeddings of the texts the
task encoded in an earlier pass through the same store (the suite always runs ``float`` first):
a retrieval task's documents (its corpus), or every text of other task types (both sides of STS
pairs, train and test texts of classification, all clustering texts). No labels, gold scores or
relevance judgements are used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedkit.errors import EmbedkitError

#: mteb prompt types -> the role recorded by the store
_DOCUMENT, _QUERY, _TEXT = "document", "query", "text"


def _prompt_value(prompt_type) -> str | None:
    if prompt_type is None:
        return None
    return getattr(prompt_type, "value", str(prompt_type))


class EmbeddingStore:
    """Float embeddings of one run: memory, then the disk cache, then the model.

    Args:
        model: a SentenceTransformer.
        cache: passed to :func:`~embedkit.cache.encode_cached` (``None`` = default disk cache,
            ``False`` = no disk cache; the in-memory layer is always on, so a text is encoded at
            most once per store).
        batch_size: encoding batch size.
        show_progress: show the encoder's progress bar for texts that must be encoded.
    """

    def __init__(self, model, *, cache=None, batch_size: int = 64, show_progress: bool = False):
        self.model = model
        self.cache = cache
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._memo: dict[str | None, dict[str, np.ndarray]] = {}
        #: task name -> role -> ordered unique texts (with the prompt they were encoded with)
        self._seen: dict[str, dict[str, OrderedDict[tuple[str | None, str], None]]] = {}
        #: texts handed to the encoder (memory misses), summed over the run
        self.texts_requested = 0

    def prompt_for(self, prompt_type) -> str | None:
        """The model's own prompt for a query/document role (``model.prompts``), if it has one."""
        prompts = getattr(self.model, "prompts", None) or {}
        role = _prompt_value(prompt_type)
        if role is None:
            return None
        p = prompts.get(role) or (prompts.get("passage") if role == _DOCUMENT else None)
        return p or None

    def get(self, texts: Sequence[str], *, prompt: str | None = None, task: str | None = None,
            role: str = _TEXT) -> np.ndarray:
        """Float embeddings ``(len(texts), dim)`` of ``texts`` (in order)."""
        from embedkit.cache import encode_cached

        texts = list(texts)
        memo = self._memo.setdefault(prompt, {})
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            self.texts_requested += len(missing)
            vecs = encode_cached(self.model, missing, batch_size=self.batch_size, cache=self.cache,
                                 show_progress=self.show_progress, prompt=prompt, desc=f"encoding {task or ''}".strip())
            for t, v in zip(missing, vecs):
                memo[t] = v
        if task is not None:
            seen = self._seen.setdefault(task, {}).setdefault(role, OrderedDict())
            for t in texts:
                seen[(prompt, t)] = None
        if not texts:
            dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else 0
            return np.zeros((0, dim or 0), np.float32)
        return np.stack([memo[t] for t in texts]).astype(np.float32, copy=False)

    def has_task(self, task: str) -> bool:
        return task in self._seen

    def fit_sample(self, task: str) -> np.ndarray:
        """Float embeddings a spec is fitted on for ``task``: its documents, else all its texts."""
        roles = self._seen.get(task)
        if not roles:
            raise EmbedkitError(
                f"no texts recorded for task {task!r}: run the float pass of this task through the same "
                "EmbeddingStore first (run_suite does), or call CompressedEncoder.fit_task(task, X)"
            )
        keys = list(roles.get(_DOCUMENT) or [])
        if not keys:
            keys = list(dict.fromkeys(k for r in roles.values() for k in r))
        return np.stack([self._memo[p][t] for p, t in keys]).astype(np.float32, copy=False)


def _is_plain_float(spec: str) -> bool:
    from embedkit.compression.spec import parse_spec

    return [name for name, _ in parse_spec(spec)] == ["float"]


def model_meta_for(model, spec: str = "float"):
    """mteb ``ModelMeta`` of an embedkit-loaded model: name from its source, revision = the weights'
    fingerprint, cosine similarity, and ``experiment_kwargs={"compression": spec}`` for every spec but
    ``float`` (so mteb writes each spec's results to its own ``experiments/`` folder)."""
    from pathlib import Path

    from mteb.models import ModelMeta
    from mteb.models.model_meta import ScoringFunction

    from embedkit.models.identity import identity
    from embedkit.models.loading import DEFAULT_MODEL_NAME, default_model_path, model_fingerprint

    source = identity(model).source
    if source is None or str(source) == default_model_path():
        name = DEFAULT_MODEL_NAME if source is not None else f"local/{type(model).__name__}"
    elif Path(str(source)).exists():
        name = f"local/{Path(str(source)).name}"
    else:
        name = str(source)
    if "/" not in name:
        name = f"local/{name}"
    dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
    return ModelMeta.create_empty(overwrites=dict(
        name=name,
        revision=model_fingerprint(model),
        embed_dim=dim,
        similarity_fn_name=ScoringFunction.COSINE,
        framework=["Sentence Transformers"],
        modalities=["text"],
        experiment_kwargs=None if _is_plain_float(spec) else {"compression": spec},
    ))


def _make_encoder_class():
    from mteb.models.abs_encoder import AbsEncoder

    class CompressedEncoder(AbsEncoder):
        """mteb encoder: float embeddings from an :class:`EmbeddingStore`, compressed by ``spec``.

        Args:
            store: the run's :class:`EmbeddingStore` (shared by all specs of a run).
            spec: compression spec, e.g. ``"float"``, ``"int8"``, ``"mrl:128,binary"``.
            asymmetric_queries: keep retrieval queries float (after the spec's transforms).

        Example:
            .. code-block:: python

                store = EmbeddingStore(load_encoder())
                mteb.evaluate(CompressedEncoder(store, "float"), task, cache=None)   # records texts
                mteb.evaluate(CompressedEncoder(store, "binary"), task, cache=None)  # no encoding
        """

        def __init__(self, store: EmbeddingStore, spec: str = "float", *, asymmetric_queries: bool = False):
            from embedkit.compression.spec import parse_spec

            parse_spec(spec)  # raise SpecError early
            self.store = store
            self.model = store.model
            self.spec = spec
            self.asymmetric_queries = asymmetric_queries
            self.plain_float = _is_plain_float(spec)
            self.mteb_model_meta = model_meta_for(store.model, spec)
            self._pipelines: dict[str, Any] = {}

        # -- compression ----------------------------------------------------------------------
        def fit_task(self, task: str, X: np.ndarray):
            """Fit this spec for ``task`` on float embeddings ``X`` (done automatically on first use)."""
            from embedkit.compression.spec import quantizer_from_spec

            pipe = quantizer_from_spec(self.spec).fit(X)
            self._pipelines[task] = pipe
            return pipe

        def pipeline(self, task: str):
            if task not in self._pipelines:
                self.fit_task(task, self.store.fit_sample(task))
            return self._pipelines[task]

        def bytes_per_vector(self, task: str) -> int:
            """Code size of this spec for ``task`` (float: 4 bytes per dimension)."""
            if self.plain_float:
                dim = self.store.model.get_embedding_dimension()
                return 4 * int(dim)
            return int(self.pipeline(task).code_size)

        def compress(self, task: str, X: np.ndarray, *, query: bool = False) -> np.ndarray:
            if self.plain_float:
                return X
            pipe = self.pipeline(task)
            if query and self.asymmetric_queries:
                return pipe.transform(X)
            try:
                return np.asarray(pipe.decode(pipe.encode(X)), dtype=np.float32)
            except NotImplementedError as e:
                raise EmbedkitError(f"compression {self.spec!r} cannot be scored by mteb: its codes cannot be decoded ({e})") from e

        # -- mteb encoder protocol -------------------------------------------------------------
        def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs):
            texts = [t for batch in inputs for t in batch["text"]]
            role = _prompt_value(prompt_type) or _TEXT
            task = task_metadata.name
            X = self.store.get(texts, prompt=self.store.prompt_for(prompt_type), task=task, role=role)
            return self.compress(task, X, query=role == _QUERY)

    return CompressedEncoder


_CLASS = None


def __getattr__(name):  # lazy: importing mteb costs seconds
    global _CLASS
    if name == "CompressedEncoder":
        if _CLASS is None:
            _CLASS = _make_encoder_class()
        return _CLASS
    raise AttributeError(name)
