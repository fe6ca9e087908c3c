"""evaluation.sweep: hyper-parameters set through set_params, the shared rescoring, the plot label."""

import numpy as np
import pytest

from embedkit.errors import EmbedkitError
from embedkit.evaluation.sweep import SweepMethod, evaluate_method, plot, plot_figure


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((200, 32)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Q = D[:20] + 0.05 * rng.standard_normal((20, 32)).astype(np.float32)
    doc_ids = [f"d{i}" for i in range(200)]
    query_ids = [f"q{i}" for i in range(20)]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(20)}
    return D, Q, doc_ids, query_ids, qrels


@pytest.mark.parametrize("spec,nbits", [("lsh:64", 128), ("itq:16", 24)])
def test_sweep_over_nbits(data, spec, nbits):
    """nbits of LSH/ITQ was a read-only property: the sweep's setattr raised AttributeError."""
    rows = evaluate_method(SweepMethod("m", spec, {"nbits": nbits}), *data, k=10, oversample=2, repeat=1)
    assert [r["bytes"] for r in rows] == [nbits // 8, nbits // 8]
    assert rows[0]["spec"] == f"{spec.split(':')[0]}:{nbits}"


def test_sweep_refuses_unknown_settings(data):
    with pytest.raises(EmbedkitError, match="has no parameter 'nbit'; its parameters are: nbits, seed"):
        evaluate_method(SweepMethod("m", "lsh:64", {"nbit": 8}), *data, k=10, repeat=1)


def test_rescored_rows_are_exact(data):
    D, Q, *_ = data
    rows = evaluate_method(SweepMethod("binary", "binary"), *data, k=10, oversample=4, repeat=1)
    plain, rescored = rows
    assert rescored["rescore"] and rescored["ndcg@10"] >= plain["ndcg@10"]
    assert rescored["ndcg@10"] == 1.0  # every query's source document is found and ranked first


def test_bebr_rows_count_the_per_document_float(data):
    """The decoded symmetric score stores one float32 per document: the row's bytes count it."""
    rows = evaluate_method(SweepMethod("bebr", "bebr:1x16", {"epochs": 0, "show_progress": False,
                                                             "symmetric": "decoded"}), *data,
                           k=10, repeat=1, rescore=(False,))
    assert rows[0]["code_bytes"] == 2 and rows[0]["bytes"] == 6
    centred = evaluate_method(SweepMethod("bebr", "bebr:1x16", {"epochs": 0, "show_progress": False}), *data,
                              k=10, repeat=1, rescore=(False,))
    assert centred[0]["code_bytes"] == 2 and centred[0]["bytes"] == 2


def test_plot_label_uses_the_float_rows_bytes(tmp_path):
    """The float line was labelled "float32 (1536 B)" whatever the dimension."""
    rows = [{"method": "float", "spec": "float", "bytes": 256, "rescore": False, "ndcg@10": 0.5},
            {"method": "lsh", "spec": "lsh:64", "bytes": 8, "rescore": False, "ndcg@10": 0.3}]
    fig = plot_figure(rows, float_ndcg=0.5)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "float32 (256 B) 0.5000" in labels and not any("1536" in x for x in labels)
    fig2 = plot_figure(rows[1:], float_ndcg=0.5)
    assert "float32 0.5000" in [t.get_text() for t in fig2.axes[0].get_legend().get_texts()]
    plot(rows, tmp_path / "p.png", float_ndcg=0.5, float_bytes=3072)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
