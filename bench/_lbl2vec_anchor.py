"""Runs the anchor package lbl2vec 1.0.2 in its own venv (called by bench/lbl2vec.py via subprocess).

Usage: ANCHOR_PYTHON bench/_lbl2vec_anchor.py SPEC.json OUT.npz
SPEC: {"texts": [...], "n_docs": N, "keywords": [[...]], "label_names": [...], "doc2vec": {...},
       "similarity_threshold": t, "min_num_docs": m}. The first N texts are scored; all are trained on.
With "transformer": PATH in SPEC, the package's own Lbl2TransformerVec runs instead, with the
SentenceTransformer at PATH, on the first N texts (workers=1: in-process, no Ray).
Tokenization is the reference example's: simple_preprocess(strip_tags(text), deacc=True, min_len=2, max_len=15).
This file imports nothing from embedkit.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np

# this folder holds bench/lbl2vec.py, which would shadow the anchor package on `import lbl2vec`
_HERE = __import__("os").path.dirname(__import__("os").path.abspath(__file__))
sys.path[:] = [p for p in sys.path if __import__("os").path.abspath(p or ".") != _HERE]


def main(spec_path: str, out_path: str) -> None:
    from gensim.models.doc2vec import TaggedDocument
    from gensim.parsing.preprocessing import strip_tags
    from gensim.utils import simple_preprocess

    spec = json.loads(open(spec_path).read())
    if spec.get("transformer"):
        return transformer(spec, out_path)
    t_import = time.perf_counter()
    from lbl2vec import Lbl2Vec

    import_s = time.perf_counter() - t_import
    texts, n_docs = spec["texts"], int(spec["n_docs"])
    t = time.perf_counter()
    tagged = [TaggedDocument(simple_preprocess(strip_tags(d), deacc=True, min_len=2, max_len=15), [str(i)])
              for i, d in enumerate(texts)]
    tokenize_s = time.perf_counter() - t
    d2v = spec["doc2vec"]
    model = Lbl2Vec(keywords_list=spec["keywords"], tagged_documents=tagged, label_names=spec["label_names"],
                    similarity_threshold=spec["similarity_threshold"], min_num_docs=spec["min_num_docs"],
                    epochs=d2v["epochs"], vector_size=d2v["vector_size"], min_count=d2v["min_count"],
                    window=d2v["window"], sample=d2v["sample"], negative=d2v["negative"], workers=d2v["workers"],
                    verbose=False)
    logging.getLogger("Lbl2Vec").setLevel(logging.ERROR)
    t = time.perf_counter()
    model.fit()
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    df = model.predict_model_docs(doc_keys=[str(i) for i in range(n_docs)])
    predict_s = time.perf_counter() - t
    scores = df[spec["label_names"]].to_numpy(dtype=np.float32)
    n_sel = np.array([len(k) for k in model.labels["doc_keys"]], dtype=np.int64)
    vocab = len(model.doc2vec_model.wv)
    np.savez(out_path, scores=scores, docs_per_label=n_sel)
    import importlib.metadata as md

    import lbl2vec  # noqa: F401

    json.dump({"fit_seconds": fit_s, "predict_seconds": predict_s, "tokenize_seconds": tokenize_s,
               "import_seconds": import_s, "vocab": vocab, "lbl2vec": md.version("lbl2vec"),
               "gensim": md.version("gensim"), "pandas": md.version("pandas")}, sys.stdout)


def transformer(spec: dict, out_path: str) -> None:
    import importlib.metadata as md

    from lbl2vec import Lbl2TransformerVec
    from sentence_transformers import SentenceTransformer

    texts = spec["texts"][: int(spec["n_docs"])]
    encoder = SentenceTransformer(spec["transformer"], device="cpu")
    model = Lbl2TransformerVec(keywords_list=spec["keywords"], documents=texts, transformer_model=encoder,
                               label_names=spec["label_names"], similarity_threshold=spec["similarity_threshold"],
                               min_num_docs=spec["min_num_docs"], workers=1, verbose=False)
    t = time.perf_counter()
    model.fit()
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    df = model.predict_model_docs()
    predict_s = time.perf_counter() - t
    scores = df[spec["label_names"]].to_numpy(dtype=np.float32)
    n_sel = np.array([len(v) for v in model.labels["doc_vectors"]], dtype=np.int64)
    np.savez(out_path, scores=scores, docs_per_label=n_sel)
    json.dump({"fit_seconds": fit_s, "predict_seconds": predict_s, "vocab": None, "lbl2vec": md.version("lbl2vec"),
               "gensim": md.version("gensim"), "pandas": md.version("pandas"),
               "sentence-transformers": md.version("sentence-transformers")}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
