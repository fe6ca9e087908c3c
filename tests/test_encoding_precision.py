"""Shards record the compute precision: a bf16 rerun does not resume (and mix into) an fp32 folder."""
import json

import pytest

from embedkit import load_encoder
from embedkit.encoding import encode_to_shards
from embedkit.errors import EmbedkitError


def test_precision_is_recorded_and_part_of_the_folder_identity(tiny_model_path, tmp_path, isolated_cache):
    texts = [f"sentence number {i} about cats" for i in range(10)]
    out = tmp_path / "emb"
    encode_to_shards(load_encoder(tiny_model_path), texts, out, shard_size=4, show_progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["precision"] == "fp32"
    half = load_encoder(tiny_model_path, precision="bf16")
    with pytest.raises(EmbedkitError, match="holds shards of another input or model"):
        encode_to_shards(half, texts, out, shard_size=4, show_progress=False)
    encode_to_shards(half, texts, out, shard_size=4, show_progress=False, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["model"]["precision"] == "bf16"
