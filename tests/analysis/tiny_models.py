"""Tiny, randomly initialised models built locally (no downloads) for the diagnostics tests."""

from __future__ import annotations

from pathlib import Path

WORDS = ("the a an of to and in is was for on with as by at from it this that he she his her man woman king queen "
         "doctor nurse long short text word model data paper study result cell protein gene news sport money "
         "market film music game team player win lose good bad yes no").split()


def tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + list(dict.fromkeys(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(folder)
    return fast


def tiny_bert_sentence_transformer(folder: Path, seed: int = 0):
    """A 2-layer, 32-d BERT wrapped as a SentenceTransformer (mean pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # older sentence-transformers
        from sentence_transformers import models
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    tr = models.Transformer(str(folder), max_seq_length=64)
    dim = tr.get_embedding_dimension() if hasattr(tr, "get_embedding_dimension") else tr.get_word_embedding_dimension()
    pool = models.Pooling(dim, pooling_mode="mean")
    return SentenceTransformer(modules=[tr, pool], device="cpu")


def tiny_gpt2(folder: Path, seed: int = 0):
    """(model, tokenizer): a 2-layer, 32-d GPT-2 LM with the word-level tokenizer (no special tokens added)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(folder)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tok._tokenizer.post_processor = None  # a causal LM: no [CLS]/[SEP]
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     pad_token_id=tok.pad_token_id, eos_token_id=3, bos_token_id=2)
    model = GPT2LMHeadModel(cfg).eval()
    return model, tok
