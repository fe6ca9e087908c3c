"""The one command-line vocabulary shared by every ``embedkit`` command.

One name per concept (hidden aliases keep older spellings working; see ``--help`` of each command):

=====================  ==========================================================================
``-m/--model M``       the model to load (``--device`` picks the torch device)
``-c/--corpus PATH``   documents: a BEIR folder, ``corpus.jsonl[.gz]`` or text lines (aliases
                       ``--input``/``-i``, ``--texts``, ``--docs``/``-d`` where those existed)
``-o/--out PATH``      what the command writes (aliases ``--output``, ``--report``); never replaces
                       anything embedkit did not write; ``--overwrite`` replaces an earlier output
``-k N``               number of hits
``--limit N``          use the first N texts (alias ``--max-texts``)
``--spec SPEC``        one compression spec (``mrl:128,binary``); ``--specs`` a ``;``-separated list
``--batch-size N``     encoding batch size
``--json``             one JSON object on stdout
``-q/--quiet``         no progress or notes on stderr (errors still print)
``-v/--verbose``       also show third-party warnings (transformers, sentence-transformers, FAISS)
=====================  ==========================================================================

The library reports through module loggers (``logging.getLogger(__name__)``); :func:`configure_logging`
routes them to stderr for the duration of one command.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path

import click

from embedkit.errors import EmbedkitError

logger = logging.getLogger("embedkit.cli")

CTX = {"help_option_names": ["-h", "--help"]}

#: third-party loggers silenced (to ERROR) unless ``-v``
THIRD_PARTY_LOGGERS = ("transformers", "sentence_transformers", "faiss", "datasets", "mteb", "gensim",
                       "huggingface_hub", "urllib3", "matplotlib", "accelerate", "torch")


# --- options with hidden aliases ----------------------------------------------------------------

class AliasOption(click.Option):
    """A click option whose extra spellings (``hidden_aliases``) work but are not shown in ``--help``."""

    def __init__(self, param_decls, hidden_aliases=(), **kwargs):
        self.hidden_aliases = tuple(hidden_aliases)
        super().__init__(list(param_decls) + list(self.hidden_aliases), **kwargs)

    def get_error_hint(self, ctx):
        return " / ".join(f"'{o}'" for o in self.opts if o not in self.hidden_aliases)

    def get_help_record(self, ctx):
        saved_opts, saved_secondary = self.opts, self.secondary_opts
        self.opts = [o for o in self.opts if o not in self.hidden_aliases]
        self.secondary_opts = [o for o in self.secondary_opts if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = saved_opts, saved_secondary


def option(*param_decls, aliases=(), **kwargs):
    """``click.option`` with hidden alias spellings."""
    return click.option(*param_decls, cls=AliasOption, hidden_aliases=aliases, **kwargs)


# --- numbers --------------------------------------------------------------------------------------

class FiniteFloat(click.ParamType):
    """A finite float (NaN and inf refused) within optional bounds."""

    name = "float"

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            self.fail(f"{v:g} must be {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            self.fail(f"{v:g} must be {'<' if self.high_open else '<='} {self.high:g}", param, ctx)
        return v


POSITIVE = click.IntRange(min=1)
POSITIVE_FLOAT = FiniteFloat(0.0, low_open=True)
NON_NEGATIVE = click.IntRange(min=0)


# --- the shared options ---------------------------------------------------------------------------

def model_option(f=None, *, required: bool = False, help: str | None = None, aliases=(), default=None,
                 device: bool = True, show_default: bool = False):
    """``-m/--model`` and ``--device`` for every command that loads a model."""

    def deco(func):
        func = click.option("--dim", type=click.IntRange(min=1), default=None, metavar="D", expose_value=False,
                            callback=_set_dim, help="Use the model's first D embedding dimensions (renormalised).")(func)
        func = click.option("--layers", type=click.IntRange(min=1), default=None, metavar="L", expose_value=False,
                            callback=_set_layers,
                            help="Use only the model's first L transformer layers (a Matryoshka / Starbucks sub-model).")(func)
        func = click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N", expose_value=False,
                            callback=_set_threads, help="CPU threads for encoding [the cores this process may use].")(func)
        func = click.option("--backend", type=_BackendType(), default="torch",
                            show_default=True, expose_value=False, callback=_set_backend,
                            help="Inference backend: torch, onnx (float32 ONNX Runtime), onnx-int8 or openvino "
                                 "(with --precision bf16: the fastest on CPUs with AVX-512 BF16).")(func)
        if device:
            func = click.option("--device", default=None, metavar="DEV",
                                help="torch device for the model: cpu (default), cuda, cuda:1, mps ...")(func)
        func = option("--model", "-m", "model", aliases=aliases, default=default, required=required, metavar="M",
                      show_default=show_default,
                      help=help or "sentence-transformers folder or hub name (default: the bundled all-MiniLM-L6-v2).")(func)
        return func

    return deco(f) if f is not None else deco


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def corpus_option(*, required: bool = True, aliases=(), help: str | None = None):
    return option("--corpus", "-c", "corpus", aliases=aliases, required=required, metavar="PATH",
                  help=help or "Documents: a BEIR folder, corpus.jsonl[.gz], or a text file with one document per line.")


def out_option(*, required: bool = True, aliases=(), help: str = "Folder to write.", dir_only: bool = True):
    """``-o/--out`` plus ``--overwrite``."""

    def deco(func):
        func = click.option("--overwrite", is_flag=True,
                            help="Replace an earlier output of this command at --out (nothing else is ever replaced).")(func)
        func = option("--out", "-o", "out", aliases=aliases, required=required, metavar="PATH", help=help)(func)
        return func

    return deco


def batch_size_option(default: int = 64):
    return click.option("--batch-size", type=POSITIVE, default=default, show_default=True, metavar="N",
                        help="Encoding batch size.")


def precision_option(func):
    """``--precision fp32|fp16|bf16``: the compute precision of encoding (recorded where embeddings are keyed)."""
    return click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None, metavar="P",
                        help="Compute precision: fp32, fp16 or bf16 [bf16 on a CUDA GPU that supports it, else fp32]; "
                             "half precision runs torch under autocast, openvino in bf16.")(func)


def limit_option(*, default=None, help: str = "Use only the first N texts.", aliases=("--max-texts",)):
    return option("--limit", "limit", aliases=aliases, type=POSITIVE, default=default, show_default=default is not None,
                  metavar="N", help=help)


class _State:
    quiet = False
    verbose = False
    backend = "torch"
    backend_given = False
    threads = None
    legacy_index_type = None
    layers = None
    dim = None


STATE = _State()


def _reset_state() -> None:
    """Forget the shared options of an earlier command run in this process (tests, ``python -m``)."""
    for key in ("quiet", "verbose", "backend", "backend_given", "threads", "legacy_index_type", "layers", "dim"):
        setattr(STATE, key, getattr(_State, key))


INDEX_TYPES = ("flat", "hnsw", "ivf")


class _BackendType(click.ParamType):
    """torch | onnx | onnx-int8; ``flat``/``hnsw``/``ivf`` are accepted on ``index build`` only, as the
    old spelling of ``--index-type`` (before the encoder backends existed)."""

    name = "torch|onnx|onnx-int8|openvino"

    def convert(self, value, param, ctx):
        v = str(value)
        if v in ("torch", "onnx", "onnx-int8", "openvino"):
            return v
        if v in INDEX_TYPES:
            if ctx is not None and ctx.command is not None and ctx.command.name == "build":
                return v
            self.fail(f"{v!r} is an index type, not an encoder backend; use --index-type {v} on `index build`",
                      param, ctx)
        self.fail(f"{v!r}: choose torch, onnx, onnx-int8 or openvino", param, ctx)


def _set_backend(ctx, param, value):
    from click.core import ParameterSource

    STATE.legacy_index_type = None
    STATE.backend_given = False
    if value in INDEX_TYPES:
        STATE.legacy_index_type, value = value, "torch"
    elif ctx is not None and ctx.get_parameter_source(param.name) not in (None, ParameterSource.DEFAULT):
        STATE.backend_given = True
    STATE.backend = value or "torch"
    return value


def _set_layers(ctx, param, value):
    STATE.layers = value
    return value


def _set_dim(ctx, param, value):
    STATE.dim = value
    return value


def _set_threads(ctx, param, value):
    STATE.threads = value
    return value


def _set_quiet(ctx, param, value):
    if value:
        STATE.quiet = True
        configure_logging(quiet=True, verbose=STATE.verbose)
    return value


def _set_verbose(ctx, param, value):
    if value:
        STATE.verbose = True
        configure_logging(quiet=STATE.quiet, verbose=True)
    return value


def common_options(func):
    """``-q/--quiet`` and ``-v/--verbose``: on every command."""
    func = click.option("--verbose", "-v", is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
                        help="Also show third-party warnings (transformers, sentence-transformers, FAISS).")(func)
    func = click.option("--quiet", "-q", is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
                        help="No progress bars or notes on stderr (results and errors still print).")(func)
    return func


def command(group=None, name=None, **kwargs):
    """A leaf command with the shared ``-h``, ``--quiet`` and ``--verbose``."""
    kwargs.setdefault("context_settings", CTX)

    def deco(func):
        func = common_options(func)
        params = func.__click_params__  # list them last in --help, after the command's own options
        params[0:0] = [params.pop(), params.pop()][::-1]
        maker = group.command if group is not None else click.command
        return maker(name, **kwargs)(func)

    return deco


def show_progress() -> bool:
    return not STATE.quiet


# --- logging --------------------------------------------------------------------------------------

class _EchoHandler(logging.Handler):
    """Writes records to the *current* ``sys.stderr`` (click's test runner swaps it per invocation)."""

    def emit(self, record):
        try:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                msg = f"{record.levelname.lower()}: {msg}"
            click.echo(msg, err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


_HANDLER = _EchoHandler()


def configure_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    """Route embedkit's module loggers to stderr for one command.

    Default: embedkit INFO and up; ``quiet``: WARNING and up, no progress bars; ``verbose``: embedkit
    DEBUG, and third-party loggers and Python warnings at WARNING (silenced otherwise). Use inside
    :class:`logging_state`, which restores everything afterwards.
    """
    root, ours = logging.getLogger(), logging.getLogger("embedkit")
    for lg in (root, ours):
        if _HANDLER in lg.handlers:
            lg.removeHandler(_HANDLER)
    if verbose:  # one handler on the root logger: embedkit's records and third-party warnings alike
        root.addHandler(_HANDLER)
        root.setLevel(logging.WARNING)
        ours.setLevel(logging.DEBUG)
    else:
        ours.addHandler(_HANDLER)
        ours.setLevel(logging.WARNING if quiet else logging.INFO)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    if verbose:
        warnings.resetwarnings()
        warnings.simplefilter("default")
    else:
        warnings.simplefilter("ignore")
        warnings.filterwarnings("default", module=r"embedkit(\.|$)")  # our own deprecations stay visible
    warnings.showwarning = _show_warning
    os.environ["TRANSFORMERS_VERBOSITY"] = "warning" if verbose else "error"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    if quiet:  # third-party progress bars too (tqdm reads TQDM_* defaults from the environment)
        os.environ["TQDM_DISABLE"] = "1"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}" if not STATE.verbose else
               f"warning: {message} ({category.__name__}, {filename}:{lineno})", err=True)


class logging_state:
    """Context manager: save and restore logger levels, handlers, warning filters and env around one command."""

    _ENV = ("TRANSFORMERS_VERBOSITY", "TF_CPP_MIN_LOG_LEVEL", "TQDM_DISABLE")

    def __enter__(self):
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        names = ("", "embedkit", *THIRD_PARTY_LOGGERS)
        self._levels = {n: logging.getLogger(n).level for n in names}
        self._env = {k: os.environ.get(k) for k in self._ENV}
        _reset_state()
        return self

    def __exit__(self, *exc):
        for lg in (logging.getLogger(), logging.getLogger("embedkit")):
            if _HANDLER in lg.handlers:
                lg.removeHandler(_HANDLER)
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reset_state()
        self._warn.__exit__(*exc)
        return False


def info(msg: str) -> None:
    """A progress note on stderr (hidden by ``--quiet``)."""
    logger.info(msg)


# --- output ---------------------------------------------------------------------------------------

def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "__dict__"):
        return {k: v for k, v in vars(o).items() if not k.startswith("_")}
    return str(o)


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True)


def print_json(obj) -> None:
    """The one JSON printer: indented, keys sorted, numpy scalars/arrays and paths converted."""
    click.echo(to_json(obj))


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# --- cheap checks before expensive work -----------------------------------------------------------

def check_input(path, option_name: str, *, kind: str = "any") -> Path:
    """An input path that exists (``kind``: ``"file"``, ``"dir"`` or ``"any"``), else a one-line error."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.exists():
        raise EmbedkitError(f"{option_name} {str(path)!r}: file not found")
    if kind == "file" and p.is_dir():
        raise EmbedkitError(f"{option_name} {str(path)!r} is a folder; expected a file")
    if kind == "dir" and not p.is_dir():
        raise EmbedkitError(f"{option_name} {str(path)!r} is not a folder")
    return p


def check_spec(spec: str, option_name: str = "--spec", *, dim: int | None = None, n_train: int | None = None,
               backend: str | None = None, disk: bool = False) -> str:
    """Check a compression spec now (a bad one must fail before any model is loaded).

    :func:`embedkit.compression.spec.check_spec`: the grammar and stage order always; with ``dim``
    (:func:`embedding_dim` of the model's config, or the shards' dimension) and ``n_train`` (the
    vectors it will be fitted on) every size the fit would refuse; ``backend``/``disk`` as there.
    """
    from embedkit.compression.spec import check_spec as _check_spec
    from embedkit.errors import SpecError

    try:
        _check_spec(spec, dim=dim, n_train=n_train, backend=backend, disk=disk)
    except SpecError as e:
        raise SpecError(f"{option_name} {spec!r}: {e}") from None
    return spec


def local_model(model) -> Path | None:
    """``--model`` when it names a local folder (an input no output may lie inside), else None."""
    if model is None:
        return None
    p = Path(str(model)).expanduser()
    return p if p.exists() else None


def check_model(model, *, layers: int | None = None, dim: int | None = None):
    """A model path that cannot exist fails now, not after other work (``None``: the default model).

    The model's shape is read from its config files (no weights loaded; :func:`embedkit.models.shape.read_shape`),
    so ``--layers``/``--dim`` (the arguments, else those of the shared model options) beyond the
    model's depth or width fail now too.

    Returns:
        The :class:`~embedkit.models.shape.ModelShape` of a local model, or None (a hub name, a
        layout the reader does not know): pass it to :func:`embedding_dim`.
    """
    from embedkit.models.loading import resolve_model
    from embedkit.models.shape import read_shape

    folder = resolve_model(model)
    shape = read_shape(folder) if os.path.isdir(folder) else None
    layers = STATE.layers if layers is None else layers
    dim = STATE.dim if dim is None else dim
    if shape is not None and layers is not None and shape.layers is not None and layers > shape.layers:
        raise EmbedkitError(f"--layers {layers}: the model has {shape.layers} transformer layers; "
                            f"use 1..{shape.layers}")
    if shape is not None and dim is not None and shape.hidden is not None and dim > shape.hidden:
        raise EmbedkitError(f"--dim {dim}: the model's embeddings have {shape.hidden} dimensions; use 1..{shape.hidden}")
    return shape


def embedding_dim(shape) -> int | None:
    """The dimension of the embeddings the command's model will output (``--dim`` if given), from the
    shape :func:`check_model` returned; None when it is not known before loading the model."""
    if STATE.dim is not None:
        return STATE.dim
    return shape.dim if shape is not None else None


def load_model(model, device=None, **kwargs):
    """``embedkit.models.loading.load_encoder`` with the CLI's ``--model``/``--device``."""
    from embedkit.models import loading

    if device is not None:
        kwargs["device"] = device
    kwargs.setdefault("backend", STATE.backend)
    if STATE.layers is not None:
        kwargs.setdefault("layers", STATE.layers)
    if STATE.dim is not None:
        kwargs.setdefault("dim", STATE.dim)
    if STATE.threads is not None:
        kwargs.setdefault("threads", STATE.threads)
    return loading.load_encoder(model, **kwargs)


def index_encoder(recorded_source, recorded_options: dict, model=None, device=None):
    """Load the encoder for an existing index (``index search/add/eval``, ``serve``).

    ``--model`` if given, else the model the index records, rebuilt with its recorded options (sub-model
    size). The runtime is ``--backend`` when given (a speed choice over the same weights: the index
    checks the weights, not the runtime), else the one the index's documents were encoded with
    (torch when ``--device`` names a GPU, which the ONNX backends cannot use).
    """
    source, opts = (model, {}) if model is not None else (recorded_source, dict(recorded_options or {}))
    recorded_backend = (recorded_options or {}).get("backend", "torch")
    if STATE.backend_given:
        opts["backend"] = STATE.backend
    elif device is not None and str(device) != "cpu":
        opts["backend"] = "torch"
    else:
        opts["backend"] = recorded_backend
    if opts["backend"] in ("onnx", "onnx-int8"):  # float32 runtimes: a recorded half precision does not apply
        opts.pop("precision", None)
    return load_model(source, device, **opts)


def prepare_output(path, kind: str, *, overwrite: bool = False, inputs=(), option_name: str = "--out") -> Path:
    """:func:`embedkit._io.prepare_output`: refuse to replace anything embedkit did not write."""
    from embedkit._io import prepare_output as _prepare

    return _prepare(path, kind, overwrite=overwrite, inputs=[i for i in inputs if i is not None], option=option_name)


def prepare_output_file(path, *, kind: str, overwrite: bool = False, inputs=(), option_name: str = "--out",
                        is_ours=None) -> Path:
    """:func:`embedkit._io.prepare_output_file`: a command that writes one file replaces only a file
    embedkit wrote as a ``kind`` output (after writing, call :func:`embedkit._io.mark_output_file`)."""
    from embedkit._io import prepare_output_file as _prepare

    return _prepare(path, kind, overwrite=overwrite, inputs=[i for i in inputs if i is not None], option=option_name,
                    is_ours=is_ours)
