"""A small corpus with planted topics for the Lbl2Vec tests."""

from __future__ import annotations

import numpy as np

TOPICS = {
    "sport": "football match goal team coach league player score stadium referee season cup striker keeper".split(),
    "finance": "bank market stock price investor shares profit trading interest loan fund bond inflation dollar".split(),
    "space": "rocket orbit nasa planet astronaut launch moon telescope satellite mars galaxy comet shuttle probe".split(),
}
FILLER = "the a of and to in on for with it was is by at this that from as be have said new year".split()
KEYWORDS = {"sport": ["football", "team"], "finance": ["bank", "stock"], "space": ["rocket", "planet"]}


def planted_corpus(n_per_topic: int = 80, seed: int = 0) -> tuple[list[str], list[str]]:
    """(texts, gold labels): each text has 14 words of its topic and 8 filler words, shuffled."""
    rng = np.random.default_rng(seed)
    texts, gold = [], []
    for i in range(n_per_topic):
        for name, vocab in TOPICS.items():
            words = list(rng.choice(vocab, 14)) + list(rng.choice(FILLER, 8))
            rng.shuffle(words)
            texts.append(" ".join(words))
            gold.append(name)
    return texts, gold
