"""Open-QA metrics: the SQuAD/ORQA normalization on their known cases, regex match, containment, summaries."""
import pytest

from realm_lite.qa_eval import (contains_answer, exact_match, is_correct, normalize_answer, regex_match,
                                span_matches, summarize)


@pytest.mark.parametrize("raw, normalized", [
    ("The Denver Broncos", "denver broncos"),            # SQuAD: lower-case, articles dropped
    ("  Saint   Bernadette\tSoubirous. ", "saint bernadette soubirous"),  # whitespace collapsed, '.' dropped
    ("an apple a day", "apple day"),
    ("Theory of the atom", "theory of atom"),             # 'the' only as a whole word
    ("Eiffel-Tower!", "eiffeltower"),                     # punctuation removed, not replaced by a space
    ("$1,000.50", "100050"),
    ("A", ""),
    ("\u00c9cole", "e\u0301cole"),                        # ORQA: unicode NFD first (é -> e + U+0301)
])
def test_normalize_answer_known_cases(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_exact_match_takes_the_max_over_references():
    assert exact_match("the Denver Broncos.", ["Carolina Panthers", "Denver Broncos"])
    assert not exact_match("Denver", ["Denver Broncos"])
    assert exact_match("\u00c9cole", ["E\u0301cole"])       # composed and decomposed forms agree after NFD
    assert not exact_match("Ecole", ["\u00c9cole"])         # NFD keeps the accent: no accent stripping


def test_regex_match_is_re_match_ignoring_case_as_in_orqa():
    assert regex_match("Paris, France", [r"paris"])       # anchored at the start, case-insensitive
    assert not regex_match("in Paris", [r"Paris"])        # re.match, not search
    assert regex_match("1989", [r"19[0-9]{2}", r"("])     # an unreadable pattern is skipped, not an error
    assert not regex_match("x", [r"("])
    assert is_correct("Mount Everest", [r"(Mt\.?|Mount) Everest"], regex=True)
    assert not is_correct("Mount Everest", [r"(Mt\.?|Mount) Everest"], regex=False)


def test_span_matches_needs_the_whole_span():
    assert span_matches("Mount Everest", [r"(Mt\.?|Mount) Everest"], regex=True)
    assert not span_matches("Mount Everest is", [r"(Mt\.?|Mount) Everest"], regex=True)
    assert span_matches("the Alps,", ["Alps"])


def test_contains_answer_whole_words():
    assert contains_answer("He was born in Berlin.", ["berlin"])
    assert not contains_answer("The Berlinale is a festival.", ["Berlin"])
    assert not contains_answer("the cat", ["the"])        # an answer that normalizes to nothing is never found
    assert contains_answer("Born in 1989 in Lyon", [r"19[0-9]{2}"], regex=True)


def test_summarize_em_and_top_k():
    rows = [{"correct": True, "answer_in_top": 1}, {"correct": False, "answer_in_top": 3},
            {"correct": False, "answer_in_top": None}, {"correct": True, "answer_in_top": 7}]
    assert summarize(rows) == {"questions": 4, "em": 0.5, "top1": 0.25, "top5": 0.5}
    assert summarize([{"correct": True}]) == {"questions": 1, "em": 1.0}  # closed-book: no retrieval
    assert summarize([]) == {"questions": 0}
