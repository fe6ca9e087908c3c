"""bench/encode_speed.py: argument handling and the quiet-machine refusal (the timing itself is not run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "encode_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("encode_speed_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments(bench, capsys):
    a = bench.parse_args(["--device", "cuda", "--docs", "100", "--rounds", "2"])
    assert (a.device, a.docs, a.rounds, a.max_load) == ("cuda", 100, 2, None)
    for bad, message in ((["--rounds", "0"], "--rounds 0: must be at least 1"),
                         (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
                         (["--max-load", "0"], "--max-load 0.0: must be above 0")):
        with pytest.raises(SystemExit) as e:
            bench.parse_args(bad)
        assert e.value.code == 2
        assert message in capsys.readouterr().err


def test_a_busy_machine_gets_no_speed_figure(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (3.5, 2.0, 1.0))
    with pytest.raises(SystemExit) as e:
        bench.check_quiet(2.0, "at the start")
    assert e.value.code == 3
    assert capsys.readouterr().err.strip() == ("refusing to report speed: the 1-minute load is 3.50 at the start "
                                               "(above 2, 1 per core); wait for a quiet machine and run again")
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.5, 2.0, 1.0))
    assert bench.check_quiet(2.0, "at the end") == 1.5


def test_cuda_mode_without_a_gpu_exits_2(bench, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the cuda mode would run the benchmark")
    with pytest.raises(SystemExit) as e:
        bench.main(["--device", "cuda"])
    assert e.value.code == 2
    assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err


def test_cpu_flags_are_a_sorted_subset(bench):
    flags = bench.cpu_flags()
    assert flags == sorted(flags) and set(flags) <= set(bench.CPU_FLAGS)
