"""realm_lite.tokenizer: WordPiece training, loading local / packaged / hub tokenizers."""
import time
from pathlib import Path

import pytest

from realm_lite.tokenizer import SPECIAL_TOKENS, get_tokenizer, load_tokenizer, train_wordpiece


def _texts(world):
    return [f"{d.title} {d.text}" for d in world.documents]


def test_trained_tokenizer_is_a_bert_wordpiece(tokenizer, cfg):
    assert tokenizer.is_fast
    assert 500 < len(tokenizer) <= cfg.vocab_size
    assert tokenizer.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == SPECIAL_TOKENS
    assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token) == ("[CLS]", "[SEP]", "[MASK]")
    ids = tokenizer("Hello there")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_trained_tokenizer_does_not_map_words_to_unk(tokenizer, world):
    # transformers 5.x: BertTokenizerFast(vocab_file=...) silently maps every word to [UNK]
    unk = tokenizer.unk_token_id
    for d in world.documents[:100]:
        assert unk not in tokenizer(d.text)["input_ids"], d.text
    assert tokenizer.tokenize("was born in the city") == ["was", "born", "in", "the", "city"]
    name = world.documents[0].title
    assert "".join(t.lstrip("#") for t in tokenizer.tokenize(name)) == name.lower().replace(" ", "")


def test_save_then_load_gives_the_same_ids(tokenizer, world):
    directory = Path(tokenizer.name_or_path)
    assert (directory / "tokenizer.json").exists()
    loaded = load_tokenizer(directory)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    texts = _texts(world)[:50] + ["Completely unseen words: zyxwv qqq 1234!"]
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert loaded.unk_token_id not in loaded("was born in")["input_ids"]
    assert load_tokenizer(str(directory)).get_vocab() == tokenizer.get_vocab()  # str paths too


def test_train_respects_vocab_size_and_case(world, tmp_path):
    small = train_wordpiece(_texts(world), 300, tmp_path / "small")
    assert len(small) <= 300
    cased = train_wordpiece(_texts(world), 3000, tmp_path / "cased", lowercase=False)
    name = world.documents[0].title.split()[0]
    assert cased.tokenize(name)[0][0].isupper()
    assert load_tokenizer(tmp_path / "cased").tokenize(name) == cased.tokenize(name)


def test_train_replaces_an_existing_directory(world, tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    train_wordpiece(_texts(world)[:100], 500, out)
    assert not (out / "stale.txt").exists() and (out / "tokenizer.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no tok.tmp left behind


@pytest.mark.parametrize("texts", [[], iter(())])
def test_train_on_empty_texts_is_an_error(texts, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        train_wordpiece(texts, 100, tmp_path / "tok")
    assert not (tmp_path / "tok").exists()


def test_training_is_deterministic(world, tmp_path):
    texts = _texts(world)
    vocabs = [train_wordpiece(texts, 3000, tmp_path / f"t{i}").get_vocab() for i in range(4)]
    assert all(v == vocabs[0] for v in vocabs[1:])
    assert {"##a", "##z"} <= set(vocabs[0])  # the continuation characters, named first in sorted order


def test_load_packaged_minilm_offline():
    tok = load_tokenizer("minilm")
    assert tok.is_fast and len(tok) == 30522
    assert tok.tokenize("The Denver Broncos") == ["the", "denver", "broncos"]
    assert tok.mask_token == "[MASK]"


def test_get_tokenizer(cfg, world, tmp_path):
    assert len(get_tokenizer(cfg.replace(tokenizer="minilm"))) == 30522
    with pytest.raises(ValueError, match="texts and out_dir"):
        get_tokenizer(cfg)
    tok = get_tokenizer(cfg, _texts(world), tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").exists() and len(tok) <= cfg.vocab_size


@pytest.mark.parametrize("make", [lambda tmp: tmp / "missing", lambda tmp: "/nonexistent/realm-lite/tokenizer",
                                  lambda tmp: "./no-such-dir/tokenizer"])
def test_missing_directory_is_an_error(tmp_path, make):
    path = str(make(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        load_tokenizer(path)
    assert path in str(e.value)


def test_missing_relative_directory_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError) as e:  # "runs/x/tokenizer" cannot be a hub name either
        load_tokenizer("runs/x/tokenizer")
    assert "runs/x/tokenizer" in str(e.value)


def test_directory_without_a_tokenizer_is_an_error(tmp_path):
    with pytest.raises(OSError) as e:
        load_tokenizer(tmp_path)
    assert str(tmp_path) in str(e.value) and "local directory" in str(e.value)


def test_hub_name_offline_fails_quickly():
    import os

    if os.environ.get("HF_HUB_OFFLINE") != "1":  # conftest and the Makefile set it; online this needs a network
        pytest.skip("HF_HUB_OFFLINE is not 1")
    name = "realm-lite-tests/no-such-tokenizer"  # never in a local cache
    t0 = time.time()
    with pytest.raises(OSError) as e:
        load_tokenizer(name)
    assert time.time() - t0 < 10
    assert name in str(e.value) and "offline" in str(e.value)


def test_whole_words_become_single_wordpieces(world, tmp_path):
    from realm_lite.corpus import salient_words, world_passages

    words = salient_words(world_passages(world))
    name = world.documents[0].title  # a person: "First Last", each word rare in the corpus
    assert set(name.split()) <= words
    plain = train_wordpiece(_texts(world), 300, tmp_path / "plain")
    whole = train_wordpiece(_texts(world), 300, tmp_path / "whole", whole_words=words)
    assert len(plain.tokenize(name)) > 2
    assert whole.tokenize(name) == [w.lower() for w in name.split()]
    assert load_tokenizer(tmp_path / "whole").tokenize(name) == whole.tokenize(name)
