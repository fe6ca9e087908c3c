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
    for _i in range(n_per_topic):
        for name, vocab in TOPICS.items():
            words = list(rng.choice(vocab, 14)) + list(rng.choice(FILLER, 8))
            rng.shuffle(words)
            texts.append(" ".join(words))
            gold.append(name)
    return texts, gold


# Topics in the vocabulary of the tiny random test encoder (embedkit.testing.WORDS): a random model
# still separates documents made of disjoint words, so Lbl2TransformerVec's plumbing can be tested
# without its labels collapsing.
TINY_TOPICS = {
    "animals": "cat dog bird fish horse cow mouse animal pet kitten puppy".split(),
    "money": "stock price market bank money trade rate economy company profit fund dollar euro".split(),
    "code": "python code program function list dict loop class error bug file index query vector".split(),
}
TINY_KEYWORDS = {"animals": ["cat", "dog"], "money": ["stock", "bank"], "code": ["python", "code"]}


def tiny_vocab_corpus(n_per_topic: int = 10, seed: int = 0) -> tuple[list[str], list[str]]:
    """(texts, gold labels) over :data:`TINY_TOPICS`: 8 topic words and 3 filler words each."""
    rng = np.random.default_rng(seed)
    texts, gold = [], []
    for _ in range(n_per_topic):
        for name, vocab in TINY_TOPICS.items():
            words = list(rng.choice(vocab, 8)) + list(rng.choice(FILLER[:8], 3))
            rng.shuffle(words)
            texts.append(" ".join(words))
            gold.append(name)
    return texts, gold
