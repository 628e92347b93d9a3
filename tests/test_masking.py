"""realm_lite.masking: salient-span, random-token and random-span masking; the taggers."""
import random
from collections import Counter

import pytest

from realm_lite.corpus import Block, Span, make_blocks, world_passages
from realm_lite.masking import (STRATEGIES, MaskedExample, get_tagger, mask, regex_tagger, sentence_spans)


@pytest.fixture(scope="module")
def sentences(world, tokenizer, cfg):
    """(text, spans, fact ids) of every annotated sentence of the quick world's blocks."""
    blocks, _ = make_blocks(world_passages(world), tokenizer, cfg.block_len)
    out = [s for b in blocks for s in sentence_spans(b) if s[1]]
    assert len(out) > 1000
    return out


def _encode(tokenizer, text, max_len):
    enc = tokenizer(text, truncation=True, max_length=max_len, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"]


def _tagged(text):
    return [text[s.start:s.end] for s in regex_tagger(text)]


# ---- structure, common to the three strategies --------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_masked_example_structure(strategy, sentences, tokenizer, cfg):
    rng = random.Random(0)
    special = set(tokenizer.all_special_ids)
    for text, spans, _ in sentences[:300]:
        ex = mask(text, spans, tokenizer, cfg, rng, strategy)
        assert isinstance(ex, MaskedExample)
        assert ex.strategy == strategy and ex.text == text
        original, _ = _encode(tokenizer, text, cfg.query_len)
        assert len(ex.input_ids) == len(original)
        assert ex.input_ids[0] == tokenizer.cls_token_id and ex.input_ids[-1] == tokenizer.sep_token_id
        assert len(ex.masked_positions) == len(ex.target_ids) > 0
        assert ex.masked_positions == sorted(set(ex.masked_positions))
        assert all(0 < i < len(original) - 1 for i in ex.masked_positions)
        assert ex.target_ids == [original[i] for i in ex.masked_positions]
        assert not special & set(ex.target_ids)
        masked = set(ex.masked_positions)
        assert all(a == b for i, (a, b) in enumerate(zip(ex.input_ids, original)) if i not in masked)
        assert any(ex.input_ids[i] != original[i] for i in masked) or strategy != "salient"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_for_a_fixed_seed(strategy, sentences, tokenizer, cfg):
    def run(seed):
        rng = random.Random(seed)
        return [mask(t, s, tokenizer, cfg, rng, strategy) for t, s, _ in sentences[:200]]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_default_strategy_is_the_configs(sentences, tokenizer, cfg):
    text, spans, _ = sentences[0]
    assert mask(text, spans, tokenizer, cfg, random.Random(0)).strategy == cfg.masking == "salient"
    ex = mask(text, spans, tokenizer, cfg.replace(masking="random-span"), random.Random(0))
    assert ex.strategy == "random-span"


# ---- salient spans -------------------------------------------------------------------------------
def test_salient_masks_exactly_one_whole_span(sentences, tokenizer, cfg):
    rng = random.Random(1)
    n_multi = 0
    for text, spans, _ in sentences:
        ex = mask(text, spans, tokenizer, cfg, rng, "salient")
        assert ex.span in {(s.start, s.end) for s in spans}
        a, b = ex.span
        _, offsets = _encode(tokenizer, text, cfg.query_len)
        inside = [i for i, (s, e) in enumerate(offsets) if e > s and s < b and a < e]
        assert ex.masked_positions == inside  # all wordpieces of the span and nothing else
        assert all(ex.input_ids[i] == tokenizer.mask_token_id for i in inside)
        decoded = tokenizer.decode(ex.target_ids)
        assert "".join(decoded.split()) == "".join(text[a:b].lower().split())
        n_multi += len(text[a:b].split()) > 1
    assert n_multi > 100  # multi-word names and dates are masked as a whole


def test_salient_picks_among_all_spans(sentences, tokenizer, cfg):
    text, spans, _ = next(s for s in sentences if len(s[1]) >= 3)
    rng = random.Random(0)
    chosen = {mask(text, spans, tokenizer, cfg, rng, "salient").span for _ in range(60)}
    assert chosen == {(s.start, s.end) for s in spans}


def test_salient_needs_spans(tokenizer, cfg):
    with pytest.raises(ValueError, match="spans"):
        mask("Denver won.", None, tokenizer, cfg, random.Random(0), "salient")
    assert mask("Denver won.", [], tokenizer, cfg, random.Random(0), "salient") is None
    # the other strategies do not need spans
    assert mask("the city was old", None, tokenizer, cfg, random.Random(0), "random-token") is not None


def test_span_truncated_away_gives_none(tokenizer, cfg):
    short = cfg.replace(query_len=16)
    text = "the " * 40 + "Pahiam Koumostil was born."
    start = text.index("Pahiam")
    late = Span(start, start + len("Pahiam Koumostil"), "PERSON")
    assert mask(text, [late], tokenizer, short, random.Random(0), "salient") is None
    # a span cut in half by truncation is not a candidate either
    words = text.split()
    cut = len(_encode(tokenizer, text, 16)[1]) - 2  # wordpieces kept of the text
    straddle = Span(0, len(" ".join(words[:cut + 3])), "ENT")
    assert mask(text, [straddle], tokenizer, short, random.Random(0), "salient") is None
    # an early span survives, and is then the only choice
    early = Span(0, 3, "ENT")
    for seed in range(10):
        ex = mask(text, [early, late], tokenizer, short, random.Random(seed), "salient")
        assert ex.span == (0, 3) and len(ex.input_ids) == 16
    # with the full query_len the late span is reachable again
    assert mask(text, [late], tokenizer, cfg.replace(query_len=128), random.Random(0), "salient") is not None


# ---- random tokens and random spans ----------------------------------------------------------------
def test_random_token_rate_and_80_10_10(sentences, tokenizer, cfg):
    rng = random.Random(2)
    special = set(tokenizer.all_special_ids)
    n_real = n_masked = 0
    kinds = Counter()
    for _ in range(3):
        for text, spans, _ in sentences:
            ex = mask(text, spans, tokenizer, cfg, rng, "random-token")
            n_real += len(ex.input_ids) - 2
            n_masked += len(ex.masked_positions)
            for i, target in zip(ex.masked_positions, ex.target_ids):
                got = ex.input_ids[i]
                assert got not in special or got == tokenizer.mask_token_id
                kinds["mask" if got == tokenizer.mask_token_id else "kept" if got == target else "random"] += 1
    assert 0.10 <= n_masked / n_real <= 0.20
    total = sum(kinds.values())
    assert 0.75 <= kinds["mask"] / total <= 0.85
    assert 0.06 <= kinds["random"] / total <= 0.14
    assert 0.06 <= kinds["kept"] / total <= 0.14


def test_random_token_rate_follows_mask_prob(tokenizer, cfg):
    text = " ".join(["the city was old and the river was wide"] * 5)
    ex = mask(text, None, tokenizer, cfg.replace(mask_prob=0.4, query_len=128), random.Random(0), "random-token")
    n = len(ex.input_ids) - 2
    assert len(ex.masked_positions) == round(0.4 * n)


def _words(text, offsets):
    """Wordpiece positions of each whitespace-separated word."""
    words, last_end = [], None
    for i, (s, e) in enumerate(offsets):
        if e == s:
            continue
        if last_end is not None and s == last_end and not text[s - 1].isspace():
            words[-1].append(i)
        else:
            words.append([i])
        last_end = e
    return words


def test_random_span_masks_whole_words(sentences, tokenizer, cfg):
    rng = random.Random(3)
    extra = "Qwzx vrrkelmop jjumpozz flanxiquu of Pahiam Koumostil was born in Zzyzyxwick on 3 May 1870."
    texts = [t for t, _, _ in sentences[:500]] + [extra] * 200
    n_real = n_masked = n_multi_piece_words = n_multi_word_spans = 0
    for text in texts:
        ex = mask(text, None, tokenizer, cfg, rng, "random-span")
        _, offsets = _encode(tokenizer, text, cfg.query_len)
        masked = set(ex.masked_positions)
        words = _words(text, offsets)
        for w in words:
            assert set(w) <= masked or not set(w) & masked, (text, w, ex.masked_positions)
            n_multi_piece_words += len(w) > 1 and set(w) <= masked
        flags = [bool(set(w) & masked) for w in words]
        n_multi_word_spans += any(a and b for a, b in zip(flags, flags[1:]))
        n_real += len(offsets) - 2
        n_masked += len(masked)
    assert n_multi_piece_words > 50  # the check above was exercised on words of several wordpieces
    assert n_multi_word_spans > 50  # spans longer than one word occur
    assert 0.10 <= n_masked / n_real <= 0.25


def test_random_span_respects_budget_on_long_text(tokenizer, cfg):
    text = " ".join(f"word{i} city river" for i in range(40))
    for seed in range(20):
        ex = mask(text, None, tokenizer, cfg.replace(query_len=128, mask_prob=0.15), random.Random(seed),
                  "random-span")
        n = len(ex.input_ids) - 2
        assert 0 < len(ex.masked_positions) <= round(0.15 * n)
        assert len(ex.masked_positions) >= round(0.15 * n) - 10


def test_unknown_strategy(tokenizer, cfg):
    with pytest.raises(ValueError) as e:
        mask("Denver won.", [], tokenizer, cfg, random.Random(0), "whole-sentence")
    for s in STRATEGIES:
        assert s in str(e.value)


# ---- taggers -----------------------------------------------------------------------------------------
def test_regex_tagger_dates():
    text = "He was born on 3 May 1870, won on February 7, 2016, moved in May 1901 and died in 1995."
    spans = regex_tagger(text)
    dates = [text[s.start:s.end] for s in spans if s.label == "DATE"]
    assert dates == ["3 May 1870", "February 7, 2016", "May 1901", "1995"]
    assert _tagged("It was popular in the 1870s.") == ["1870s"]
    assert _tagged("There were 250 of them.") == []  # not a year


def test_regex_tagger_names():
    text = "However, the Denver Broncos beat the Carolina Panthers at Levi's Stadium."
    assert _tagged(text) == ["Denver Broncos", "Carolina Panthers", "Levi's Stadium"]
    assert all(s.label == "ENT" for s in regex_tagger(text))
    assert _tagged("The University of Chicago is old.") == ["University of Chicago"]
    assert _tagged("Denver Broncos won in 1995.") == ["Denver Broncos", "1995"]


def test_regex_tagger_skips_sentence_initial_single_words():
    assert _tagged("However, it rained.") == []
    assert _tagged("He won. Later he left for Paris.") == ["Paris"]
    assert _tagged("NASA was founded in 1958.") == ["NASA", "1958"]  # acronyms are names


def test_regex_tagger_offsets():
    text = 'The Super Bowl was played in Santa Clara, California on February 7, 2016 ("Super Bowl 50").'
    for s in regex_tagger(text):
        assert text[s.start:s.end].strip() == text[s.start:s.end] != ""
    spans = regex_tagger(text)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))  # sorted, not overlapping


@pytest.mark.parametrize("text,name", [("In 1995 Microsoft released Windows.", "Microsoft"),
                                       ("On 7 February 2016 Denver won.", "Denver"),
                                       ("Tesla arrived in May 1884 and Edison hired him.", "Edison")])
def test_regex_tagger_finds_a_name_right_after_a_date(text, name):
    assert name in _tagged(text)


def test_get_tagger():
    name, tag = get_tagger()
    assert name == "regex" or name.startswith("spacy:")
    spans = tag("The Denver Broncos won on February 7, 2016.")
    assert spans and all(isinstance(s, Span) for s in spans)
    assert get_tagger("regex") == ("regex", regex_tagger)
    with pytest.raises(ValueError) as e:
        get_tagger("bogus")
    assert "bogus" in str(e.value) and "regex" in str(e.value)


def test_get_tagger_spacy_when_asked():
    try:
        name, _ = get_tagger("spacy")
    except ImportError as e:
        assert "spacy" in str(e).lower()
        with pytest.raises(Exception):
            import spacy

            spacy.load("en_core_web_sm")
    else:
        assert name.startswith("spacy:")


# ---- sentence_spans ----------------------------------------------------------------------------------
def test_sentence_spans_use_block_spans_when_present():
    text = "Ada Lovelace met Charles Babbage. They wrote in 1843."
    spans = [Span(0, 12, "PERSON", "E1", ["F1"]), Span(48, 52, "DATE", None, ["F2"])]
    block = Block("d#0", "d", "Ada", text, spans, [(0, 33, ["F1"]), (34, 53, ["F2"])])

    def tagger(_):
        raise AssertionError("the tagger must not run on an annotated block")

    out = sentence_spans(block, tagger)
    assert [t for t, _, _ in out] == ["Ada Lovelace met Charles Babbage.", "They wrote in 1843."]
    assert [[(s.start, s.end, s.entity) for s in sp] for _, sp, _ in out] == [[(0, 12, "E1")], [(14, 18, None)]]
    assert out[1][0][14:18] == "1843"
    assert [f for _, _, f in out] == [["F1"], ["F2"]]


def test_sentence_spans_tag_unannotated_blocks():
    text = "Ada Lovelace met Charles Babbage. They wrote in 1843."
    block = Block("d#0", "d", "Ada", text, None, [(0, 33, []), (34, 53, [])])
    seen = []

    def tagger(t):
        seen.append(t)
        return regex_tagger(t)

    out = sentence_spans(block, tagger)
    assert seen == [text]
    assert [[t[s.start:s.end] for s in sp] for t, sp, _ in out] == [["Ada Lovelace", "Charles Babbage"], ["1843"]]
    # the default tagger is the regex one
    assert [[t[s.start:s.end] for s in sp] for t, sp, _ in sentence_spans(block)] == \
           [["Ada Lovelace", "Charles Babbage"], ["1843"]]


def test_sentence_spans_drop_spans_crossing_sentences():
    text = "One two. Three four."
    block = Block("d#0", "d", "D", text, [Span(4, 14, "ENT")], [(0, 8, []), (9, 20, [])])
    assert [sp for _, sp, _ in sentence_spans(block)] == [[], []]


def test_world_sentences_carry_their_facts(sentences, world):
    with_facts = [(t, sp, f) for t, sp, f in sentences if f]
    assert len(with_facts) > len(sentences) // 2
    for text, spans, facts in with_facts[:300]:
        for fid in facts:
            value = world.facts[fid].value
            surface = world.entities[value].name if value in world.entities else value
            assert surface in [text[s.start:s.end] for s in spans]


def test_query_pool_sample_stops_when_no_sentence_can_be_masked(world, tokenizer, cfg):
    """Salient masking of sentences without a salient span masks nothing: an error naming why, not an endless loop."""
    from realm_lite.queries import QueryPool

    blocks, _ = make_blocks(world_passages(world), tokenizer, cfg.block_len)
    pool = QueryPool(blocks, tokenizer, cfg, world)
    assert len(pool.sample(random.Random(0), 4)) == 4
    pool.train = [(bi, text, []) for bi, text, _ in pool.train[:5]]  # no span left to mask
    with pytest.raises(ValueError, match="masked only 0 of 4 sentences in 1400 draws from 5 training sentences: "
                                         "with masking='salient' and query_len=48"):
        pool.sample(random.Random(0), 4)
