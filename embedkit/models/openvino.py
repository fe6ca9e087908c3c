"""OpenVINO runtime for embedkit's ONNX exports: ``load_encoder(..., backend="openvino")``.

The float32 ONNX export of :mod:`embedkit.models.onnx_export` is compiled by OpenVINO for the CPU;
:class:`~embedkit.models.onnx.OnnxEncoder` runs it through :class:`OpenVinoSession` (the same tokenizer,
token-budget batches and ``encode`` surface as the onnxruntime backends). ``precision="bf16"`` asks
OpenVINO to compute in bfloat16 (``INFERENCE_PRECISION_HINT``): on CPUs with AVX-512 BF16 or AMX it
is the fastest CPU route embedkit measured (``bench/encode_speed.py``, README "Encoding speed"); on
other CPUs OpenVINO computes in float32 and :attr:`OpenVinoSession.effective_precision` says so.

Needs the ``openvino`` extra: ``pip install 'embedkit[openvino]'``.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import threading

from embedkit.errors import BackendError

__all__ = ["OpenVinoSession", "openvino_version"]

_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def openvino_version() -> str:
    """The installed OpenVINO version (``""`` when it is not installed)."""
    try:
        return md.version("openvino")
    except md.PackageNotFoundError:
        return ""


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU, with onnxruntime's ``run`` signature.

    Args:
        model_path: the ``model.onnx`` of an export folder.
        threads: inference threads.
        precision: ``fp32``, ``bf16`` or ``fp16`` (OpenVINO's inference precision hint).

    Attributes:
        effective_precision: what OpenVINO computes in (``"f32"`` where the CPU has no bf16 support).

    Raises:
        BackendError: OpenVINO is not installed, or cannot compile the graph.
    """

    def __init__(self, model_path: str | os.PathLike, *, threads: int, precision: str = "fp32"):
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("backend 'openvino' needs OpenVINO: pip install 'embedkit[openvino]' "
                               "(or pip install openvino)") from None
        from embedkit.models.pipeline import check_precision

        self.precision = check_precision(precision)
        config = {"INFERENCE_PRECISION_HINT": _HINTS[self.precision], "INFERENCE_NUM_THREADS": int(threads),
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = ov.Core().compile_model(str(model_path), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long texts
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise BackendError(f"OpenVINO could not compile {str(model_path)!r} ({type(e).__name__}: {first}); "
                               "use backend='onnx' or 'torch'") from e
        self.effective_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self._output = self.compiled.output(0)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: callers from several threads take turns

    def run(self, output_names, feeds: dict) -> list:
        """``[embeddings]`` for ``feeds`` (int64 arrays by input name), as ``onnxruntime.InferenceSession.run``."""
        with self._lock:
            result = self._request.infer(feeds)
            return [result[self._output].copy()]
