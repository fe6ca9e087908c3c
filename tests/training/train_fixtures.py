"""Fixtures for the training tests (imported by tests/training/conftest.py and tests/cli/test_train_cli.py)."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    from embedkit.testing import WORDS

    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    train = d / "train.txt"
    train.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(256)) + "\n")
    dev = d / "dev.tsv"
    rows = ["score\tsentence1\tsentence2"]
    for _ in range(40):
        a = " ".join(rng.choice(WORDS) for _ in range(6))
        b = " ".join(rng.choice(WORDS) for _ in range(6))
        rows.append(f"{rng.uniform(0, 5):.2f}\t{a}\t{b}")
    dev.write_text("\n".join(rows) + "\n")
    return {"train": str(train), "dev": str(dev)}


@pytest.fixture()
def recipe_dict(tiny_model_path, tiny_corpus, tmp_path):
    def make(loss="simcse", sampler="random", **training):
        t = {"batch_size": 16, "max_steps": 6, "checkpoint_every": 2, "max_seq_length": 16, "seed": 7,
             "learning_rate": 1.0e-3, "logging_steps": 2}
        t.update(training)
        return {"model": tiny_model_path, "output": str(tmp_path / f"out_{loss}_{sampler}"),
                "data": {"train": tiny_corpus["train"]}, "loss": {"name": loss},
                "sampler": {"name": sampler, "embed": "tfidf"}, "training": t,
                "eval": {"sets": [tiny_corpus["dev"]]}}
    return make
