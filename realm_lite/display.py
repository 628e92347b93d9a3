"""Text helpers for notebooks and the explorer: show spans and masks inline."""
from __future__ import annotations


def highlight(text: str, spans, left: str = "[", right: str = "]", label: bool = False) -> str:
    """`text` with each span wrapped, e.g. "[Pahiam Koumostil] was born in [Koumport]."."""
    out, pos = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        if s.start < pos:
            continue  # overlapping spans: keep the first
        tag = f"{s.label}:" if label else ""
        out += [text[pos:s.start], left, tag, text[s.start:s.end], right]
        pos = s.end
    return "".join(out + [text[pos:]])


def show_masked(example, tokenizer, blank: str = "___") -> str:
    """The masked x as text, each run of [MASK] shown as one blank, and the targets y."""
    pieces = tokenizer.convert_ids_to_tokens(example.input_ids[1:-1])
    words, prev_mask = [], False
    for p in pieces:
        is_mask = p == tokenizer.mask_token
        if is_mask and prev_mask:
            continue
        words.append(blank if is_mask else p)
        prev_mask = is_mask
    text = " ".join(words).replace(" ##", "")
    return f"{text}   ->  y = {tokenizer.decode(example.target_ids)!r}"
