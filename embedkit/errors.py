"""User-facing errors.

Every problem caused by the user's input (a file, a parameter, a model path) raises a subclass of
:class:`EmbedkitError`. Its message names the input and says what is wrong and, where possible, how
to fix it. The CLI prints that message on one line and exits with status 2; it never shows a
traceback for these.
"""

from __future__ import annotations


class EmbedkitError(ValueError):
    """Base class for errors caused by bad input, with a one-line message for the user."""


class DataFormatError(EmbedkitError):
    """A data file is malformed (the message names the file and line)."""


class ModelNotFoundError(EmbedkitError):
    """A model path does not exist, or a hub model cannot be fetched offline."""


class IndexFormatError(EmbedkitError):
    """An index folder is corrupt, truncated, edited or of a foreign format."""


class ModelMismatchError(EmbedkitError):
    """Querying an index with another model than the one it was built with."""


class SpecError(EmbedkitError):
    """A compression spec string does not parse."""


class NotFittedError(EmbedkitError):
    """An estimator or quantizer was used before ``fit``."""


class RecipeError(EmbedkitError):
    """A training recipe is invalid; the message names the file and the key."""


class TempScaleError(EmbedkitError):
    """A model TempScale cannot be applied to, or a bad temperature."""


class AnalysisInputError(EmbedkitError):
    """An embedding matrix or label list given to an analysis function is unusable."""


class DebiasInputError(EmbedkitError):
    """Word vectors or word lists given to a debiasing method are unusable."""


class OutputExistsError(EmbedkitError):
    """An output path exists and is not an embedkit output of the same kind (or --overwrite was not given)."""


class IndexStateError(EmbedkitError):
    """An operation would leave an index inconsistent (refused; nothing was changed)."""


class LabelCollapseError(EmbedkitError):
    """Lbl2Vec built two or more labels from (nearly) the same documents; the message names them and the setting to change."""


class WriteLogError(EmbedkitError):
    """The write log beside a served index is corrupt, or the index is already served by another process."""


class ServeError(EmbedkitError):
    """``embedkit serve`` cannot start as asked: the index folder is a symbolic link, or the port is in use."""


class BackendError(EmbedkitError):
    """An inference backend (ONNX Runtime) cannot serve a model: unknown backend name, a module the exporter cannot handle, a setting the exported model does not support."""


__all__ = [
    "BackendError",
    "WriteLogError",
    "ServeError",
    "LabelCollapseError",
    "EmbedkitError",
    "DataFormatError",
    "ModelNotFoundError",
    "IndexFormatError",
    "ModelMismatchError",
    "SpecError",
    "NotFittedError",
    "RecipeError",
    "TempScaleError",
    "AnalysisInputError",
    "DebiasInputError",
    "OutputExistsError",
    "IndexStateError",
    "DistributedError",
    "ResourceError",
    "BudgetError",
    "UntrainedSizeWarning",
]


class DistributedError(EmbedkitError):
    """A multi-process training run failed: a worker died, or a checkpoint does not fit the process count."""


class ResourceError(EmbedkitError):
    """A requested size does not fit this machine's memory (refused before anything is allocated)."""


class BudgetError(EmbedkitError):
    """An index budget (bytes per vector, RAM, query latency) that no candidate configuration meets."""


class UntrainedSizeWarning(UserWarning):
    """A (layers, dims) sub-model of a Matryoshka / Starbucks model at a size its training did not cover."""
