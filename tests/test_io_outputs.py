"""Issue 24: an output replaces only what embedkit wrote (marker file lists, single-file records)."""

from __future__ import annotations

import json

import pytest

from embedkit._io import (
    OUTPUT_MARKER,
    atomic_directory,
    foreign_entries,
    mark_output,
    mark_output_file,
    output_file_kind,
    output_kind,
    prepare_output,
    prepare_output_file,
)
from embedkit.errors import OutputExistsError


def _marker(folder):
    return json.loads((folder / OUTPUT_MARKER).read_text())


def test_atomic_directory_lists_what_the_folder_holds_when_committed(tmp_path):
    out = tmp_path / "o"
    with atomic_directory(out) as tmp:
        (tmp / "a.bin").write_bytes(b"a")
        mark_output(tmp, "model")  # before the rest is written: the list is taken again at commit
        (tmp / "1_Pooling").mkdir()
        (tmp / "1_Pooling" / "config.json").write_text("{}")
        (tmp / "manifest.json").write_text("{}")
    assert _marker(out)["files"] == ["1_Pooling", "1_Pooling/config.json", "a.bin", "manifest.json"]
    assert _marker(out)["kind"] == "model" and foreign_entries(out, "model") == []
    assert prepare_output(out, "model", overwrite=True) == out.resolve()


def test_a_file_added_later_is_named_and_nothing_is_replaced(tmp_path):
    out = tmp_path / "o"
    with atomic_directory(out) as tmp:
        (tmp / "w.bin").write_bytes(b"w")
        mark_output(tmp, "model")
    for i in range(5):
        (out / f"note{i}.txt").write_text("mine")
    with pytest.raises(OutputExistsError) as e:
        prepare_output(out, "model", overwrite=True)
    assert str(e.value) == (f"--out {str(out)!r} holds 5 entries embedkit did not write (note0.txt, note1.txt, "
                            "note2.txt and 2 more); embedkit will not replace it — move them out or name a new folder")
    # without --overwrite the same refusal comes first (--overwrite would not help)
    with pytest.raises(OutputExistsError, match="holds 5 entries"):
        prepare_output(out, "model")


def test_temporary_names_and_onnx_exports_are_embedkits(tmp_path):
    out = tmp_path / "o"
    with atomic_directory(out) as tmp:
        (tmp / "w.bin").write_bytes(b"w")
        mark_output(tmp, "model")
    (out / ".w.bin.abc123.tmp").write_bytes(b"killed write")
    (out / ".embedkit-onnx" / "fp-onnx").mkdir(parents=True)
    (out / ".embedkit-onnx" / "fp-onnx" / "model.onnx").write_bytes(b"x")
    assert foreign_entries(out, "model") == []
    assert foreign_entries(out, "index") == [".embedkit-onnx", ".embedkit-onnx/fp-onnx", ".embedkit-onnx/fp-onnx/model.onnx"]


def test_marker_without_a_file_list(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "w.bin").write_bytes(b"w")
    (out / OUTPUT_MARKER).write_text(json.dumps({"kind": "model", "embedkit": "0.1"}))
    with pytest.raises(OutputExistsError) as e:
        prepare_output(out, "model", overwrite=True)
    assert str(e.value) == (f"--out {str(out)!r} is an embedkit model from an older embedkit that did not record which "
                            "files it wrote; embedkit will not replace it — delete it yourself or name a new folder")
    # an index: its manifest lists its files
    (out / OUTPUT_MARKER).write_text(json.dumps({"kind": "index", "embedkit": "0.1"}))
    (out / "manifest.json").write_text(json.dumps({"format": "embedkit.index/1", "files": {"w.bin": {}}}))
    assert prepare_output(out, "index", overwrite=True) == out.resolve()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"holds a file embedkit did not write \(notes.txt\)"):
        prepare_output(out, "index", overwrite=True)
    # an index written before markers existed: the manifest alone
    (out / OUTPUT_MARKER).unlink()
    assert output_kind(out) == "index"
    with pytest.raises(OutputExistsError, match=r"\(notes.txt\)"):
        prepare_output(out, "index", overwrite=True)
    (out / "notes.txt").unlink()
    assert prepare_output(out, "index", overwrite=True) == out.resolve()


def test_disk_index_segments_added_in_place_are_embedkits(tmp_path):
    out = tmp_path / "ix"
    with atomic_directory(out) as tmp:
        (tmp / "seg-00001.faiss").write_bytes(b"x")
        mark_output(tmp, "index")
    (out / "seg-00002.faiss").write_bytes(b"x")  # an incremental save, not in the marker's list
    (out / "removed-00002.npy").write_bytes(b"x")
    assert foreign_entries(out, "index") == []


def test_patterns_keep_an_interrupted_run_replaceable(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    mark_output(out, "run", patterns=("index-*",))
    (out / "index-float").mkdir()
    (out / "index-float" / "docs.sqlite").write_bytes(b"x")
    assert foreign_entries(out, "run") == []
    (out / "thesis.txt").write_text("mine")
    assert foreign_entries(out, "run") == ["thesis.txt"]


def test_single_file_record(tmp_path):
    f = tmp_path / "t.tsv"
    assert prepare_output_file(f, "triplets") == f
    f.write_text("a\tb\n")
    with pytest.raises(OutputExistsError, match="was not written by embedkit"):
        prepare_output_file(f, "triplets", overwrite=True)
    mark_output_file(f, "triplets")
    assert (tmp_path / ".t.tsv.embedkit-output.json").is_file() and output_file_kind(f) == "triplets"
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        prepare_output_file(f, "triplets")
    assert prepare_output_file(f, "triplets", overwrite=True) == f
    with pytest.raises(OutputExistsError, match="is an embedkit triplets file, not a vectors file"):
        prepare_output_file(f, "vectors", overwrite=True)
    f.write_text("a\tc\n")  # same size, other content
    assert output_file_kind(f) is None
    with pytest.raises(OutputExistsError, match="or was changed since"):
        prepare_output_file(f, "triplets", overwrite=True)
    # a format's own mark (an HTML report's generator tag) is accepted too
    assert prepare_output_file(f, "triplets", overwrite=True, is_ours=lambda p: True) == f


@pytest.mark.parametrize("out", ["in/corpus.jsonl", "in/sub/new.tsv", "in", "data.tsv"])
def test_single_file_inside_an_input_is_refused(tmp_path, out):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "corpus.jsonl").write_text("{}")
    (tmp_path / "data.tsv").write_text("x")
    with pytest.raises(OutputExistsError, match="would overwrite the input"):
        prepare_output_file(tmp_path / out, "triplets", overwrite=True, inputs=[tmp_path / "in", tmp_path / "data.tsv"])
