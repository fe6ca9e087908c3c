from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from lbl2vec_corpus import KEYWORDS, TINY_KEYWORDS, TOPICS, planted_corpus, tiny_vocab_corpus

from embedkit.errors import (
    DataFormatError,
    EmbedkitError,
    ModelMismatchError,
    NotFittedError,
)
from embedkit.topics import Lbl2TransformerVec, Lbl2Vec, UnknownKeywordWarning, load_lbl2vec, read_keywords
from embedkit.topics.base import cosine
from embedkit.topics.transformer import split_chunks

SMALL = dict(vector_size=32, window=5, min_count=2, sample=0, epochs=20, workers=1, seed=0)


@pytest.fixture(scope="module")
def corpus():
    return planted_corpus()


@pytest.fixture(scope="module")
def fitted(corpus):
    texts, _ = corpus
    return Lbl2Vec(KEYWORDS, min_num_docs=10, **SMALL).fit(texts)


def test_label_vectors_move_towards_keyword_documents(fitted, corpus):
    _, gold = corpus
    gold = np.array(gold)
    for j, name in enumerate(fitted.label_names_):
        topic_mean = fitted.doc_vectors_[gold == name].mean(0, keepdims=True)
        before = cosine(fitted.keyword_vectors_[j : j + 1], topic_mean)[0, 0]
        after = cosine(fitted.label_vectors_[j : j + 1], topic_mean)[0, 0]
        assert after > before, (name, before, after)
        assert after > 0.9
        # the documents averaged into the label vector are the planted topic's
        assert len(fitted.label_doc_indices_[j]) == 10
        assert np.all(gold[fitted.label_doc_indices_[j]] == name)
    assert np.mean(fitted.predict() == gold) > 0.95
    # retrieval: the top documents of every label belong to it
    for name in TOPICS:
        hits = fitted.search(name, k=20)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        assert all(gold[i] == name for i, _ in hits)


def test_new_documents_are_classified_and_deterministic(fitted):
    new = ["the striker scored a goal for the team in the cup match",
           "the bank raised the interest rate and stock prices fell",
           "nasa will launch a rocket to orbit the moon and mars"]
    assert list(fitted.predict(new)) == ["sport", "finance", "space"]
    a, b = fitted.decision_function(new), fitted.decision_function(new[::-1])[::-1]
    np.testing.assert_array_equal(a, b)  # per-document reseeding: order and batch do not matter
    assert a.shape == (3, 3) and np.all(np.abs(a) <= 1 + 1e-6)


def test_threshold_offset_and_max_docs(corpus):
    texts, gold = corpus
    gold = np.array(gold)
    m = Lbl2Vec(KEYWORDS, similarity_threshold=-1.0, max_num_docs=30, min_num_docs=5, **SMALL).fit(texts)
    assert all(len(i) == 30 for i in m.label_doc_indices_)  # everything passes the threshold, capped at 30
    m2 = Lbl2Vec(KEYWORDS, similarity_threshold_offset=0.0, min_num_docs=3, **SMALL).fit(texts)
    assert all(len(i) == 3 for i in m2.label_doc_indices_)  # offset 0 keeps none -> the minimum
    for idx, sc in zip(m.label_doc_scores_, m.label_doc_indices_):
        assert len(idx) == len(sc)


def test_outlier_cleaning_drops_planted_outliers(corpus):
    texts, gold = corpus
    gold = np.array(gold)
    # 90 candidates per label: the 80 documents of its topic and 10 off-topic ones
    plain = Lbl2Vec(KEYWORDS, similarity_threshold=-1.0, max_num_docs=90, **SMALL).fit(texts)
    clean = Lbl2Vec(KEYWORDS, similarity_threshold=-1.0, max_num_docs=90, clean_outliers=True, **SMALL).fit(texts)
    for j, name in enumerate(plain.label_names_):
        assert np.sum(gold[plain.label_doc_indices_[j]] != name) == 10
        kept = clean.label_doc_indices_[j]
        assert np.sum(gold[kept] != name) <= 2 and len(kept) >= 75  # LOF removes the off-topic documents
        np.testing.assert_allclose(clean.label_vectors_[j], clean.doc_vectors_[kept].mean(0), rtol=1e-5, atol=1e-6)


def test_extra_documents_train_doc2vec_and_join_the_pool(corpus):
    texts, gold = corpus
    extra = ["galaxy comet telescope probe shuttle"] * 5 + ["unrelated filler words here"] * 5
    m = Lbl2Vec(KEYWORDS, min_num_docs=5, **SMALL).fit(texts[:60], extra_documents=extra)
    assert m.doc_vectors_.shape[0] == 60 and m.n_candidates_ == 70
    assert m.training_scores().shape == (60, 3)
    m2 = Lbl2Vec(KEYWORDS, min_num_docs=5, label_docs_from_extra=False, **SMALL).fit(texts[:60], extra_documents=extra)
    assert m2.n_candidates_ == 60 and all(i.max() < 60 for i in m2.label_doc_indices_)


def test_unknown_keyword_warns_errors_or_is_ignored(corpus):
    texts, _ = corpus
    kws = {**KEYWORDS, "space": ["rocket", "zeppelin"]}
    with pytest.warns(UnknownKeywordWarning, match="'zeppelin' not in the Doc2Vec vocabulary"):
        m = Lbl2Vec(kws, **SMALL).fit(texts)
    assert m.unknown_keywords_ == {"space": ["zeppelin"]} and m.keywords_used_[2] == ["rocket"]
    with pytest.raises(EmbedkitError, match="'zeppelin' not in the Doc2Vec vocabulary"):
        Lbl2Vec(kws, unknown_keywords="error", **SMALL).fit(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Lbl2Vec(kws, unknown_keywords="ignore", **SMALL).fit(texts)
    with pytest.raises(EmbedkitError, match="none of its keywords"):
        Lbl2Vec({**KEYWORDS, "space": ["zeppelin"]}, unknown_keywords="ignore", **SMALL).fit(texts)


@pytest.mark.parametrize("keywords,msg", [
    ({"sport": ["football"], "finance": []}, "'finance' has an empty keyword list"),
    ({"sport": ["football"], "finance": ["  "]}, "'finance' has an empty keyword list"),
    ({}, "no labels"),
])
def test_empty_keywords_are_errors(keywords, msg, corpus):
    with pytest.raises(EmbedkitError, match=msg):
        Lbl2Vec(keywords, **SMALL).fit(corpus[0])


def test_empty_documents_and_bad_params_are_errors(corpus, fitted):
    texts, _ = corpus
    with pytest.raises(EmbedkitError, match="document 3 is empty"):
        Lbl2Vec(KEYWORDS, **SMALL).fit(texts[:3] + ["   "] + texts[3:])
    with pytest.raises(EmbedkitError, match="document 1 is empty"):
        fitted.predict(["a goal", ""])
    with pytest.raises(EmbedkitError, match="single string"):
        fitted.predict("a goal")
    with pytest.raises(EmbedkitError, match="min_num_docs must be >= 1"):
        Lbl2Vec(KEYWORDS, min_num_docs=0, **SMALL).fit(texts)
    with pytest.raises(EmbedkitError, match="unknown label 'weather'"):
        fitted.search("weather")
    with pytest.raises(NotFittedError):
        Lbl2Vec(KEYWORDS).predict(["x y"])
    with pytest.warns(UserWarning, match="no word in the vocabulary"):
        fitted.predict(["zzzz qqqq"])


def test_sklearn_params_are_stored_as_given():
    m = Lbl2Vec(KEYWORDS, min_count=3, similarity_threshold=0.3)
    p = m.get_params()
    assert p["keywords"] is KEYWORDS and p["min_count"] == 3 and p["hs"] == 1 and p["negative"] == 5
    assert m.set_params(min_num_docs=7).min_num_docs == 7
    assert not hasattr(m, "label_vectors_")


def test_save_load_round_trip(fitted, tmp_path):
    new = ["the striker scored a goal", "stock prices fell at the bank", "a probe orbits mars"]
    fitted.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["doc2vec.npz", "documents.json", "embedkit-output.json", "lbl2vec.json", "vectors.npz",
                     "vocab.json"]
    np.load(tmp_path / "m" / "doc2vec.npz", allow_pickle=False)  # no pickled object arrays
    loaded = load_lbl2vec(tmp_path / "m")
    assert isinstance(loaded, Lbl2Vec) and loaded.label_names_ == fitted.label_names_
    np.testing.assert_array_equal(loaded.decision_function(new), fitted.decision_function(new))
    np.testing.assert_array_equal(loaded.training_scores(), fitted.training_scores())
    assert list(loaded.predict(new)) == list(fitted.predict(new))
    assert loaded.search("space", 5) == fitted.search("space", 5)
    assert loaded.documents_ == fitted.documents_
    assert loaded.get_params()["min_num_docs"] == 10


def test_load_errors(tmp_path, fitted):
    with pytest.raises(EmbedkitError, match="no Lbl2Vec model folder"):
        load_lbl2vec(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="lbl2vec.json is missing"):
        load_lbl2vec(tmp_path / "empty")
    fitted.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "lbl2vec.json").read_text())
    manifest["format"] = "other"
    (tmp_path / "m" / "lbl2vec.json").write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match="is not 'embedkit-lbl2vec'"):
        load_lbl2vec(tmp_path / "m")


def test_read_keywords(tmp_path):
    p = tmp_path / "kw.tsv"
    p.write_text("label\tname\tkeywords\n1\tWorld\tElection War\n# comment\n\n2\tSports\tFootball, Golf\n")
    labels, keywords = read_keywords(p)  # still unpacks as (labels, keywords)
    assert (labels, keywords) == (["1", "2"], [["Election", "War"], ["Football", "Golf"]])
    assert read_keywords(p).names == ["World", "Sports"]  # the name column is kept
    p.write_text("sport\tfootball goal\n")
    assert read_keywords(p).names == [None] and read_keywords(p).display_names == ["sport"]
    p.write_text("sport\tfootball goal\nmoney\t \n")
    with pytest.raises(DataFormatError, match=r"kw.tsv:2: label 'money' has no keywords"):
        read_keywords(p)
    p.write_text("sport football\n")
    with pytest.raises(DataFormatError, match="kw.tsv:1: .* no tab"):
        read_keywords(p)
    p.write_text("a\tx\na\ty\n")
    with pytest.raises(DataFormatError, match="appears twice"):
        read_keywords(p)


def testsplit_chunks():
    text = "One two three. Four five six seven. Eight."
    assert split_chunks(text, 6) == ["One two three.", "Four five six seven. Eight."]
    assert split_chunks(text, 5) == ["One two three.", "Four five six seven.", "Eight."]
    assert split_chunks("a b c d e f g", 3) == ["a b c", "d e f", "g"]
    assert split_chunks("short", 100) == ["short"]


# ---- Lbl2TransformerVec (tiny random encoder: checks the plumbing, not the quality)


def test_transformer_fit_predict_save_load(tiny_model, tiny_model_path, tmp_path, isolated_cache):
    texts, _ = tiny_vocab_corpus()
    m = Lbl2TransformerVec(TINY_KEYWORDS, model=tiny_model_path, min_num_docs=4).fit(
        texts, extra_documents=["a cat and a dog"])
    assert m.label_vectors_.shape == (3, tiny_model.get_embedding_dimension())
    assert m.n_candidates_ == 31 and all(len(i) == 4 for i in m.label_doc_indices_)
    # label vector = mean of the selected documents' vectors
    pool = np.concatenate([m.doc_vectors_, m._embed(["a cat and a dog"])])
    np.testing.assert_allclose(m.label_vectors_[0], pool[m.label_doc_indices_[0]].mean(0), rtol=1e-5, atol=1e-6)
    # the selected documents are the ones closest to the keyword centroid
    sims = cosine(pool, m.keyword_vectors_[:1])[:, 0]
    assert set(m.label_doc_indices_[0]) == set(np.argsort(-sims)[:4])
    new = ["the dog and the cat", "a bank loan"]
    scores = m.decision_function(new)
    m.save(tmp_path / "t")
    loaded = load_lbl2vec(tmp_path / "t")
    assert isinstance(loaded, Lbl2TransformerVec)
    np.testing.assert_array_equal(loaded.decision_function(new), scores)
    assert list(loaded.predict(new)) == list(m.predict(new))
    np.testing.assert_allclose(m.decision_function(texts[:5]), m.training_scores()[:5], atol=1e-6)
    with pytest.raises(EmbedkitError, match="document 0 is empty"):
        m.predict([" "])
    with pytest.raises(EmbedkitError, match="'x' has an empty keyword list"):
        Lbl2TransformerVec({"x": []}, model=tiny_model).fit(texts)


@pytest.mark.slow
def test_transformer_load_refuses_other_weights(tiny_model_path, corpus, tmp_path, isolated_cache, default_model):
    m = Lbl2TransformerVec(TINY_KEYWORDS, model=tiny_model_path, min_num_docs=3).fit(tiny_vocab_corpus()[0])
    m.save(tmp_path / "t")
    with pytest.raises(ModelMismatchError, match="other weights"):
        Lbl2TransformerVec.load(tmp_path / "t", model=default_model)
