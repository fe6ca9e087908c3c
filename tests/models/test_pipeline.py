"""The one encode pipeline (embedkit.models.pipeline): equal to sentence-transformers' own encode on CPU,
input order kept, precision checked and keyed, shards resumable through it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from embedkit.errors import BackendError

MIXED = [("a cat sat " * k).strip() for k in (1, 40, 3, 7, 60, 2, 15, 1, 33)] * 7


@pytest.fixture(scope="module")
def plain(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_model_path, device="cpu")


@pytest.fixture()
def calls(monkeypatch):
    """Counts the texts that went through run_pipeline (proves the pipeline, not ST's loop, encoded them)."""
    from embedkit.models import pipeline

    seen = []
    real = pipeline.run_pipeline

    def counting(model, texts, **kw):
        seen.append(len(texts))
        return real(model, texts, **kw)

    monkeypatch.setattr(pipeline, "run_pipeline", counting)
    return seen


def test_load_encoder_returns_the_pipelined_model_with_the_same_fingerprint(tiny_model, plain):
    import pickle

    from embedkit.models.loading import model_fingerprint
    from embedkit.models.pipeline import PipelinedSentenceTransformer, precision_of

    assert type(tiny_model) is PipelinedSentenceTransformer
    assert precision_of(tiny_model) == "fp32"
    assert model_fingerprint(tiny_model) == model_fingerprint(plain)  # caches and index manifests stay valid
    assert type(pickle.loads(pickle.dumps(tiny_model))) is PipelinedSentenceTransformer  # Ray ships models


@pytest.mark.parametrize("kwargs", [{}, {"normalize_embeddings": True}, {"prompt": "query: "},
                                    {"truncate_dim": 16, "normalize_embeddings": True}, {"batch_size": 5}])
def test_pipeline_equals_the_plain_sentence_transformers_path(tiny_model, plain, calls, kwargs):
    got = tiny_model.encode(MIXED, **kwargs)
    want = plain.encode(MIXED, **kwargs)
    assert calls == [len(MIXED)]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_pipeline_keeps_the_output_types_of_encode(tiny_model, plain):
    import torch

    one = tiny_model.encode("a cat")
    assert one.shape == plain.encode("a cat").shape
    np.testing.assert_allclose(one, plain.encode("a cat"), atol=1e-5)
    t = tiny_model.encode(MIXED[:3], convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (3, 32)
    assert tiny_model.encode([]).shape == (0,)
    q = tiny_model.encode(MIXED[:4], precision="int8")  # sentence-transformers' output quantization still works
    assert q.dtype == np.int8


def test_order_is_kept_with_mixed_lengths_and_small_token_budgets(tiny_model):
    from embedkit.models.pipeline import run_pipeline

    one_by_one = np.stack([tiny_model.encode([t])[0] for t in MIXED[:9]])
    for budget in (8, 64, 100_000):
        got = run_pipeline(tiny_model, MIXED[:9] * 3, batch_size=4, token_budget=budget).numpy()
        np.testing.assert_allclose(got, np.concatenate([one_by_one] * 3), atol=1e-5)


def test_several_tokenizer_threads_give_the_same_rows(tiny_model, plain, monkeypatch):
    from embedkit.models import pipeline

    monkeypatch.setattr(pipeline, "CHUNK", 7)  # 9 chunks of MIXED, taken in turn by 3 threads
    got = pipeline.run_pipeline(tiny_model, MIXED, batch_size=4, workers=3).numpy()
    np.testing.assert_allclose(got, plain.encode(MIXED), atol=1e-5)
    assert pipeline.default_workers("cpu") == 1


def test_plan_batches_cover_every_text_once_within_the_budget():
    from embedkit.models.pipeline import plan_batches

    lengths = [5, 60, 3, 3, 200, 17, 8, 60]
    plan = plan_batches(lengths, 3, 64)
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(lengths)))
    assert [b.tolist() for b in plan] == [[4], [1], [7], [5, 6, 0], [2, 3]]
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 64 for b in plan)
    assert [len(b) for b in plan_batches([4] * 10, None, 16)] == [4, 4, 2]  # no cap: the budget alone


def test_a_tokenizer_error_reaches_the_caller(tiny_model, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("tokenizer broke")

    monkeypatch.setattr(tiny_model, "preprocess", broken)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        tiny_model.encode(MIXED)


def test_bf16_autocast_on_cpu_is_close_but_computed_in_bf16(tiny_model_path, tiny_model):
    from embedkit import load_encoder
    from embedkit.models.loading import model_fingerprint
    from embedkit.models.resolve import model_load_options

    bf = load_encoder(tiny_model_path, device="cpu", precision="bf16")
    a, b = tiny_model.encode(MIXED, normalize_embeddings=True), bf.encode(MIXED, normalize_embeddings=True)
    assert not np.array_equal(a, b)
    assert (a * b).sum(1).min() > 0.99
    assert model_fingerprint(bf) == model_fingerprint(tiny_model)  # weights stay float32
    assert model_load_options(bf) == {"precision": "bf16"}  # what an index manifest records
    assert model_load_options(tiny_model) == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "fp8"}, "precision 'fp8': unknown; use one of fp32, fp16, bf16"),
    ({"precision": "bf16", "backend": "onnx-int8"},
     "precision 'bf16': the onnx-int8 backend computes in float32 and int8; use --backend openvino or torch "
     "for half precision"),
])
def test_precision_is_checked_with_one_line(tiny_model_path, kwargs, message):
    from embedkit import load_encoder

    with pytest.raises(BackendError) as e:
        load_encoder(tiny_model_path, **kwargs)
    assert str(e.value) == message


def test_cache_key_differs_for_bf16_and_is_unchanged_for_fp32(tiny_model_path, tiny_model):
    from embedkit import load_encoder
    from embedkit.cache import model_namespace
    from embedkit.models.loading import model_fingerprint

    fp = model_fingerprint(tiny_model)
    old = f"L{tiny_model.max_seq_length}|Pq: |T{tiny_model.truncate_dim}"  # the settings string before precisions
    assert model_namespace(tiny_model, "q: ") == f"{fp}-{hashlib.blake2b(old.encode(), digest_size=4).hexdigest()}"
    bf = load_encoder(tiny_model_path, device="cpu", precision="bf16")
    assert model_namespace(bf, "q: ") != model_namespace(tiny_model, "q: ")
    assert model_namespace(bf, "q: ").startswith(fp + "-")


def test_shards_are_resumable_through_the_pipeline(tiny_model, plain, calls, isolated_cache, tmp_path):
    from embedkit.encoding import encode_to_shards, load_shards

    texts = [f"{t} {i}" for i, t in enumerate(MIXED[:20])]
    out = tmp_path / "emb"
    first = encode_to_shards(tiny_model, texts, out, shard_size=6, show_progress=False, cache=False)
    assert first["shards"] == 4 and calls == [6, 6, 6, 2]
    (out / "shard-00002.npy").unlink()
    again = encode_to_shards(tiny_model, texts, out, shard_size=6, show_progress=False, cache=False)
    assert again["resumed_shards"] == 3 and calls[4:] == [6]
    vecs = load_shards(out)
    np.testing.assert_allclose(vecs, plain.encode(texts), atol=1e-5)


def test_encode_ladder_runs_through_the_pipeline_and_equals_the_sub_model(tiny_model_path, monkeypatch):
    from embedkit import load_encoder
    from embedkit.models import pipeline
    from embedkit.models.submodel import encode_ladder

    batches = []
    real = pipeline.iter_batches
    monkeypatch.setattr(pipeline, "iter_batches", lambda *a, **k: (batches.append(1), real(*a, **k))[1])
    full = load_encoder(tiny_model_path, device="cpu")
    ladder = encode_ladder(full, MIXED, [(1, 16), (2, 32)], batch_size=8)
    assert batches
    small = load_encoder(tiny_model_path, device="cpu", layers=1, dim=16)
    np.testing.assert_allclose(ladder[(1, 16)], small.encode(MIXED), atol=1e-5)


def test_cli_precision_is_checked_before_the_model_loads(tmp_path):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    corpus = tmp_path / "docs.txt"
    corpus.write_text("a cat\na dog\n")
    for args in (["encode", "-c", str(corpus), "-o", str(tmp_path / "e")],
                 ["index", "build", "-c", str(corpus), "-o", str(tmp_path / "i")]):
        r = CliRunner().invoke(cli, [*args, "--precision", "fp8"])
        assert r.exit_code == 2
        assert "Invalid value for '--precision': 'fp8' is not one of 'fp32', 'fp16', 'bf16'." in r.output


def test_cli_encode_records_bf16_in_the_cache_namespace(tiny_model_path, isolated_cache, tmp_path):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    corpus = tmp_path / "docs.txt"
    corpus.write_text("a cat\na dog\n")
    for precision, out in (("fp32", "a"), ("bf16", "b")):
        r = CliRunner().invoke(cli, ["encode", "-q", "-m", tiny_model_path, "--device", "cpu", "-c", str(corpus),
                                     "-o", str(tmp_path / out), "--precision", precision])
        assert r.exit_code == 0, r.output
    assert len(list((isolated_cache / "embeddings").iterdir())) == 2  # one namespace per precision


@pytest.mark.skipif(__import__("importlib").util.find_spec("openvino") is None, reason="openvino extra not installed")
def test_openvino_backend_fp32_equals_torch_and_bf16_is_keyed(tiny_model_path, tiny_model, tmp_path):
    from embedkit.cache import model_namespace
    from embedkit.models.onnx import load_onnx_encoder
    from embedkit.models.resolve import model_load_options

    f32 = load_onnx_encoder(tiny_model_path, backend="openvino", export_root=tmp_path)
    np.testing.assert_allclose(f32.encode(MIXED), tiny_model.encode(MIXED), atol=1e-4)
    bf = load_onnx_encoder(tiny_model_path, backend="openvino", precision="bf16", export_root=tmp_path)
    assert model_load_options(bf) == {"backend": "openvino", "precision": "bf16"}
    assert model_namespace(bf) != model_namespace(f32)
    assert (np.sum(bf.encode(MIXED) * f32.encode(MIXED), 1) > 0.99).all()
