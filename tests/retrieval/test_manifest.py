"""Issue 12 item 7: the manifest cannot make the loader read outside the folder, skip a file, or hang."""

import hashlib
import json
import os
import shutil
import threading

import numpy as np
import pytest

from embedkit import EmbeddingIndex
from embedkit.errors import IndexFormatError


@pytest.fixture()
def saved(tmp_path):
    X = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    idx = EmbeddingIndex.build([f"text {i}" for i in range(20)], [f"d{i}" for i in range(20)], embeddings=X,
                               spec="binary", rescore=2)
    return idx.save(tmp_path / "ix")


def rewrite(path, edit):
    """Edit the manifest and recompute its (unkeyed) self-checksum, as anyone who can write the folder can."""
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    m.pop("manifest_sha256", None)
    m["manifest_sha256"] = hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(m))


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_dropping_a_file_from_the_manifest_does_not_skip_its_check(saved):
    data = bytearray((saved / "index.faiss").read_bytes())
    data[-5] ^= 0xFF
    (saved / "index.faiss").write_bytes(bytes(data))
    rewrite(saved, lambda m: m["files"].pop("index.faiss"))
    with pytest.raises(IndexFormatError, match="the manifest does not list index.faiss"):
        EmbeddingIndex.load(saved)


def test_file_names_outside_the_folder_are_refused(saved, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not part of any index")
    entry = {"sha256": sha(outside), "bytes": outside.stat().st_size}
    rewrite(saved, lambda m: m["files"].update({"../outside.bin": entry}))
    with pytest.raises(IndexFormatError, match=r"file name '\.\./outside\.bin' in 'files' is not a plain file name"):
        EmbeddingIndex.load(saved)


def test_unknown_file_names_are_refused(saved):
    (saved / "extra.bin").write_bytes(b"x")
    rewrite(saved, lambda m: m["files"].update({"extra.bin": {"sha256": sha(saved / "extra.bin"), "bytes": 1}}))
    with pytest.raises(IndexFormatError, match="lists 'extra.bin', which is not part of an embedkit index"):
        EmbeddingIndex.load(saved)


def test_symlinks_inside_the_folder_are_refused(saved, tmp_path):
    shutil.copy(saved / "docs.sqlite", tmp_path / "docs-copy.sqlite")
    os.unlink(saved / "docs.sqlite")
    os.symlink(tmp_path / "docs-copy.sqlite", saved / "docs.sqlite")  # same bytes, checksum matches
    with pytest.raises(IndexFormatError, match="docs.sqlite is a symbolic link"):
        EmbeddingIndex.load(saved)


def test_manifest_symlink_to_dev_zero_is_refused_at_once(saved):
    os.unlink(saved / "manifest.json")
    os.symlink("/dev/zero", saved / "manifest.json")
    result = []

    def load():
        try:
            EmbeddingIndex.load(saved)
        except IndexFormatError as e:
            result.append(str(e))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "load() kept reading /dev/zero"
    assert result and "the manifest is a symbolic link" in result[0]


def test_oversized_manifest_is_refused_without_reading_it(saved):
    from embedkit.retrieval.manifest import MAX_MANIFEST_BYTES

    with open(saved / "manifest.json", "r+b") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(IndexFormatError, match=f"manifest is {MAX_MANIFEST_BYTES + 1} bytes, over the"):
        EmbeddingIndex.load(saved)


@pytest.mark.parametrize("key", ["files", "model", "spec", "dim", "count"])
def test_missing_fields_are_format_errors_not_key_errors(saved, key):
    rewrite(saved, lambda m: m.pop(key))
    with pytest.raises(IndexFormatError, match=f"field '{key}' must be .* \\(missing\\); the manifest is damaged"):
        EmbeddingIndex.load(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(model="x"), "field 'model' must be an object"),
    (lambda m: m["model"].pop("fingerprint"), "field 'model.fingerprint' must be a string or null"),
    (lambda m: m.update(dim=True), "field 'dim' must be a whole number"),
    (lambda m: m.update(rescore=0), "field 'rescore' must be null or a whole number >= 1"),
    (lambda m: m["files"]["index.faiss"].update(sha256="zz"), "entry 'index.faiss' in 'files' needs 'sha256'"),
    (lambda m: m.update(rescore=None), "lists 'rescore.f16.npy', which is not part of an embedkit index"),
    (lambda m: m.update(backend="annoy"), "describes an index this embedkit cannot build"),
])
def test_schema_is_validated(saved, edit, message):
    rewrite(saved, edit)
    with pytest.raises(IndexFormatError, match=message):
        EmbeddingIndex.load(saved)


def test_a_json_list_is_not_an_index(saved):
    (saved / "manifest.json").write_text("[1, 2]")
    with pytest.raises(IndexFormatError, match="not an embedkit index"):
        EmbeddingIndex.load(saved)


def test_verify_false_still_checks_names_and_sizes(saved):
    with open(saved / "index.faiss", "ab") as f:
        f.write(b"\0")
    with pytest.raises(IndexFormatError, match="index.faiss is corrupt or truncated"):
        EmbeddingIndex.load(saved, verify=False)


def test_wrong_rescore_array_is_refused(saved):
    np.save(saved / "rescore.f16.npy", np.zeros((20, 8), dtype=np.float16))
    rewrite(saved, lambda m: m["files"].update({"rescore.f16.npy": {"sha256": sha(saved / "rescore.f16.npy"),
                                                                      "bytes": (saved / "rescore.f16.npy").stat().st_size}}))
    with pytest.raises(IndexFormatError, match=r"rescore.f16.npy holds float16 \(20, 8\), expected float16 \(n, 16\)"):
        EmbeddingIndex.load(saved)
