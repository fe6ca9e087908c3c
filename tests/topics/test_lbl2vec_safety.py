"""Collapsed labels, keyword-file names, output folders, scoring (issues 11 and 12)."""

from __future__ import annotations

import gzip
import os
import stat

import numpy as np
import pytest
from lbl2vec_corpus import KEYWORDS, planted_corpus

from embedkit._io import output_kind
from embedkit.data import KeywordFile, read_keywords
from embedkit.errors import DataFormatError, EmbedkitError, LabelCollapseError, OutputExistsError
from embedkit.topics import Lbl2Vec, load_lbl2vec, score_labels

SMALL = dict(vector_size=32, window=5, min_count=2, sample=0, epochs=20, workers=1, seed=0)
NEW = ["the striker scored a goal for the team in the cup match",
       "the bank raised the interest rate and stock prices fell",
       "nasa will launch a rocket to orbit the moon and mars"]


@pytest.fixture(scope="module")
def corpus():
    return planted_corpus()


@pytest.fixture(scope="module")
def fitted(corpus):
    return Lbl2Vec(KEYWORDS, min_num_docs=10, **SMALL).fit(corpus[0])


# ---- collapsed labels: stop with an error instead of predicting noise


def test_threshold_that_keeps_everything_collapses_all_labels(corpus):
    texts, _ = corpus
    with pytest.raises(LabelCollapseError) as e:
        Lbl2Vec(KEYWORDS, similarity_threshold=-1.0, **SMALL).fit(texts)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("labels 'sport', 'finance', 'space' collapsed: their label vectors were built from nearly "
                          "the same 240 of 240 documents (Jaccard 1.00, cosine 1.000)"), msg
    assert msg.endswith("raise similarity_threshold (now -1), lower max_num_docs (now unlimited) or give these "
                        "labels more distinct keywords"), msg


def test_min_num_docs_that_takes_everything_collapses(corpus):
    texts, _ = corpus
    with pytest.raises(LabelCollapseError, match=r"lower min_num_docs \(now 240\)"):
        Lbl2Vec(KEYWORDS, min_num_docs=240, **SMALL).fit(texts)


def test_only_the_labels_that_collapsed_are_named(corpus):
    texts, _ = corpus
    kws = {**KEYWORDS, "soccer": ["football", "team"]}  # the same keywords as "sport"
    with pytest.raises(LabelCollapseError) as e:
        Lbl2Vec(kws, min_num_docs=10, **SMALL).fit(texts)
    assert str(e.value).startswith("labels 'sport', 'soccer' collapsed")


def test_distinct_topics_do_not_collapse(fitted):
    sets = [set(i.tolist()) for i in fitted.label_doc_indices_]
    assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])
    sims = np.triu(fitted.label_vectors_ @ fitted.label_vectors_.T /
                   np.outer(*[np.linalg.norm(fitted.label_vectors_, axis=1)] * 2), 1)
    assert sims.max() < 0.99


# ---- keyword files: names kept, invalid UTF-8 one line with the byte offset


def test_keyword_file_names_are_search_labels(corpus, tmp_path):
    texts, gold = corpus
    kw = tmp_path / "kw.tsv"
    kw.write_text("label\tname\tkeywords\n1\tSport\tfootball team\n2\tFinance\tbank stock\n3\tSpace\trocket planet\n")
    kf = read_keywords(kw)
    assert isinstance(kf, KeywordFile) and kf.names == ["Sport", "Finance", "Space"]
    m = Lbl2Vec(kf, min_num_docs=10, **SMALL).fit(texts)
    assert m.label_names_ == ["1", "2", "3"] and m.display_names_ == ["Sport", "Finance", "Space"]
    assert list(m.predict(NEW)) == ["1", "2", "3"]  # predictions use the labels the documents' files use
    assert m.search("Sport", 5) == m.search("1", 5) and m.search("space", 5) == m.search("3", 5)
    ids = {"sport": "1", "finance": "2", "space": "3"}
    assert all(ids[gold[i]] == "2" for i, _ in m.search("Finance", 20))
    with pytest.raises(EmbedkitError, match=r"unknown label 'Weather'; the model knows: '1' \(Sport\), '2' \(Finance\)"):
        m.search("Weather")
    m.save(tmp_path / "m")
    loaded = load_lbl2vec(tmp_path / "m")
    assert loaded.display_names_ == ["Sport", "Finance", "Space"]
    assert loaded.search("Sport", 5) == m.search("1", 5)


@pytest.mark.parametrize("gz", [False, True])
def test_keyword_file_invalid_utf8_is_one_line_with_byte_offset(tmp_path, gz):
    data = b"sport\tfootball goal\n" * 5000 + b"money\tbank \xff market\n"  # the bad byte is at 100,011
    p = tmp_path / ("kw.tsv.gz" if gz else "kw.tsv")
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataFormatError) as e:
        read_keywords(p)
    assert str(e.value) == (f"{p.name}:5001: not valid UTF-8 (invalid start byte at byte 100011); "
                            "save the file as UTF-8")


def test_keyword_file_other_errors(tmp_path):
    p = tmp_path / "kw.tsv"
    p.write_text("1\tSport\tfootball\n2\tSport\tbank\n")
    with pytest.raises(DataFormatError, match=r"kw.tsv:2: name 'Sport' appears twice"):
        read_keywords(p)
    with pytest.raises(DataFormatError, match="file not found"):
        read_keywords(tmp_path / "missing.tsv")
    p.write_bytes(b"\x1f\x8b not really gzip")
    bad = tmp_path / "kw.tsv.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataFormatError, match="cannot read the file"):
        read_keywords(bad)


# ---- output folders: replace only what embedkit wrote; umask modes


def test_save_never_replaces_a_foreign_folder(fitted, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputExistsError, match="not empty and not an embedkit lbl2vec"):
        fitted.save(d)
    assert (d / "thesis.txt").read_text() == "years of work" and sorted(os.listdir(d)) == ["thesis.txt"]
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="is not a folder"):
        fitted.save(f)
    assert f.read_text() == "x"


def test_save_again_needs_overwrite_and_respects_umask(fitted, tmp_path):
    old = os.umask(0o022)
    try:
        fitted.save(tmp_path / "m")
        assert output_kind(tmp_path / "m") == "lbl2vec"
        with pytest.raises(OutputExistsError, match="already holds an embedkit lbl2vec; pass --overwrite"):
            fitted.save(tmp_path / "m")
        fitted.save(tmp_path / "m", overwrite=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()} == {0o644}
    assert load_lbl2vec(tmp_path / "m").label_names_ == fitted.label_names_


def test_load_doc2vec_with_an_encoder_is_refused(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    with pytest.raises(EmbedkitError, match="applies to transformer models only"):
        load_lbl2vec(tmp_path / "m", model="some-encoder")
    assert load_lbl2vec(tmp_path / "m", model=None).label_names_ == fitted.label_names_


# ---- scoring: the one function the CLI and the benchmark use


def test_score_labels_matches_sklearn_and_hand_values():
    from sklearn.metrics import f1_score, roc_auc_score

    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a"]
    scores = np.array([[.9, .1, 0], [.4, .6, 0], [.2, .8, 0], [.1, .9, 0], [0, .2, .8], [.5, .1, .4]])
    r = score_labels(y_true, y_pred, ["a", "b", "c"], scores=scores)
    assert r["n"] == 6 and r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert r["per_label"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                   "support": 2}
    assert r["per_label"]["c"]["precision"] == 1.0 and r["per_label"]["c"]["recall"] == 0.5
    assert r["roc_auc"]["a"] == pytest.approx(roc_auc_score(np.array(y_true) == "a", scores[:, 0]))
    assert r["mean_roc_auc"] == pytest.approx(np.mean(list(r["roc_auc"].values())))
    # a label nobody has and nobody predicts counts 0 in the macro average (over the model's labels)
    r2 = score_labels(["a", "b"], ["a", "b"], ["a", "b", "z"])
    assert r2["macro_f1"] == pytest.approx(2 / 3) and r2["per_label"]["z"]["support"] == 0


def test_score_labels_errors():
    with pytest.raises(EmbedkitError, match=r"true label\(s\) 'World' are not among the model's labels \('1', '2'\)"):
        score_labels(["World", "1"], ["1", "1"], ["1", "2"])
    with pytest.raises(EmbedkitError, match="2 true labels for 1 predictions"):
        score_labels(["1", "2"], ["1"], ["1", "2"])
    with pytest.raises(EmbedkitError, match=r"scores have shape \(2, 1\), expected \(2, 2\)"):
        score_labels(["1", "2"], ["1", "2"], ["1", "2"], scores=np.zeros((2, 1)))


def test_model_scores_its_predictions(fitted, corpus):
    _, gold = corpus
    r = fitted.score_labels(gold)
    assert r["macro_f1"] > 0.95 and min(r["roc_auc"].values()) > 0.95
    r_new = fitted.score_labels(["sport", "finance", "space"], NEW)
    assert r_new["accuracy"] == 1.0
