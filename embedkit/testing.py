"""Tiny, random, offline models for tests and quick experiments (built in well under a second)."""

from __future__ import annotations

import os
from pathlib import Path

WORDS = (
    "the a of and to in is was for on that with as it by at from this be are or an which have not has but were "
    "cat dog bird fish horse cow mouse animal pet kitten puppy food eat sleep run jump play ball game sport team "
    "stock price market bank money trade rate economy company profit loss share invest fund dollar euro "
    "python code program function list dict loop class error bug test data file index search query vector model "
    "he she him her his hers man woman king queen boy girl father mother doctor nurse engineer teacher "
    "good bad big small long short new old first last high low fast slow hot cold"
).split()


def make_tiny_tokenizer(path: str | os.PathLike):
    """A word-level BERT-style tokenizer over a small fixed English vocabulary, saved at ``path``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    fast.save_pretrained(str(path))
    return fast


def make_tiny_model(path: str | os.PathLike, *, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
                    normalize: bool = True) -> str:
    """Save a random tiny BERT sentence-transformers model (mean pooling) at ``path``; return the path.

    Example:
        >>> from embedkit import load_encoder
        >>> model = load_encoder(make_tiny_model("/tmp/tiny"))
        >>> model.encode(["a cat"]).shape
        (1, 32)
    """
    import torch
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    path = Path(path)
    hf_dir = path / "_hf"
    tok = make_tiny_tokenizer(hf_dir)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(str(hf_dir))
    modules = [Transformer(str(hf_dir), max_seq_length=64), Pooling(hidden, "mean")]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    return str(path)
