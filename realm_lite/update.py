"""Knowledge update: edit the corpus, re-embed only the changed blocks, ask again (paper 1 and 5). Notebook 07.

REALM keeps knowledge in the corpus Z, not in its weights. So after facts change in the synthetic
world, re-rendering the affected documents and re-embedding only their blocks with the frozen
Embed_doc should be enough for a fine-tuned model to return the new answers, with no retraining.
A closed-book model has nowhere to look the change up; BM25 re-indexes its (cheap) term statistics.

    report = knowledge_update(qa, test_examples, n_facts=50, seed=0)   # qa and its world change in place
    report["new_value_returned"]   # report["facts_changed"] <= report["facts_asked"]: the questions limit it
"""
from __future__ import annotations

import random
import time

import torch

from realm_lite.corpus import make_blocks, world_passages
from realm_lite.mips import MipsIndex
from realm_lite.qa import QASystem, build_bm25, predict
from realm_lite.qa_data import QAExample
from realm_lite.qa_eval import contains_answer, exact_match
from realm_lite.reader import ReaderInputs
from realm_lite.retriever import embed_blocks, embed_in_bf16
from realm_lite.world import RELATIONS


def reblock(world, blocks: list, doc_ids: set, tokenizer, block_len: int) -> tuple[list, list]:
    """The blocks after the world's documents `doc_ids` changed: their new blocks take the place of their old ones.
    Returns (blocks, keep): keep[i] is the old row of new block i, or None where block i must be embedded anew."""
    if not doc_ids:  # a fact set to the value it had: nothing to re-block
        return list(blocks), list(range(len(blocks)))
    fresh, _ = make_blocks([p for p in world_passages(world) if p.id in doc_ids], tokenizer, block_len)
    by_doc: dict[str, list] = {}
    for b in fresh:
        by_doc.setdefault(b.doc_id, []).append(b)
    out, keep, seen = [], [], set()
    for row, b in enumerate(blocks):
        if b.doc_id not in doc_ids:
            out.append(b)
            keep.append(row)
        elif b.doc_id not in seen:
            seen.add(b.doc_id)
            out += by_doc.get(b.doc_id, [])
            keep += [None] * len(by_doc.get(b.doc_id, []))
    return out, keep


def reindex(index: MipsIndex, blocks: list, keep: list, embed_doc, tokenizer, cfg, device) -> MipsIndex:
    """A MIPS index over `blocks` (reblock's output): kept rows copied, the others embedded with Embed_doc now."""
    old = index.embeddings
    emb = torch.empty((len(blocks), old.shape[1]), dtype=old.dtype, device=old.device)  # (N', D)
    kept = [i for i, r in enumerate(keep) if r is not None]
    new = [i for i, r in enumerate(keep) if r is None]
    emb[kept] = old[[keep[i] for i in kept]]
    if new:
        emb[new] = embed_blocks(embed_doc, [blocks[i] for i in new], tokenizer, cfg.block_len, device=device,
                                autocast=embed_in_bf16(cfg, device)).to(emb.device)
    return MipsIndex(emb, index.backend, version=index.version)  # same Embed_doc, same version


def replace_documents(qa: QASystem, doc_ids: set) -> dict:
    """Re-block the world's documents `doc_ids`; re-embed just their blocks; swap in the new index and blocks."""
    t0 = time.time()
    blocks, keep = reblock(qa.world, qa.blocks, doc_ids, qa.tokenizer, qa.cfg.block_len)
    if qa.index is not None:
        qa.index = reindex(qa.index, blocks, keep, qa.model.embed_doc, qa.tokenizer, qa.cfg, qa.device)
    qa.blocks = blocks
    qa.inputs = ReaderInputs(blocks, qa.tokenizer, qa.cfg.block_len, qa.cfg.query_len, qa.cfg.qa_max_span)
    if qa.bm25 is not None:
        qa.bm25 = build_bm25(blocks)
    return {"documents_changed": len(doc_ids), "blocks_reembedded": keep.count(None) if qa.index is not None else 0,
            "blocks": len(blocks), "update_seconds": round(time.time() - t0, 2)}


def knowledge_update(qa: QASystem, examples: list[QAExample], n_facts: int = 50, seed: int = 0, log=print) -> dict:
    """Change the value of up to `n_facts` entity-valued facts asked about in `examples`; report how often the
    system returns the new value afterwards (and the old one before and after)."""
    if n_facts < 1:
        raise ValueError(f"n_facts={n_facts}: the knowledge update changes 1 fact or more")
    if qa.world is None:
        raise ValueError("the knowledge update needs the synthetic world (a run pre-trained with --corpus world)")
    rng = random.Random(seed)
    entity_valued = {r for r, (_, kind, _) in RELATIONS.items() if kind not in ("date", "year")}
    by_fact = {}
    for ex in examples:
        if ex.meta.get("relation") in entity_valued:
            by_fact.setdefault(ex.meta["fact"], ex)
    if not by_fact:
        raise ValueError("no question about an entity-valued fact to change")
    chosen = [by_fact[f] for f in rng.sample(sorted(by_fact), min(n_facts, len(by_fact)))]
    if len(chosen) < n_facts:
        log(f"changed {len(chosen)} of the {n_facts} facts asked for: the {len(examples)} questions ask about "
            f"{len(by_fact)} entity-valued facts")
    before = predict(qa, chosen)
    changed, asked_after = set(), []
    for ex in chosen:
        fact = qa.world.facts[ex.meta["fact"]]
        kind = qa.world.entities[fact.value].kind
        pool = sorted(e.id for e in qa.world.entities.values() if e.kind == kind and e.id != fact.value)
        new = rng.choice(pool)
        old_name = qa.world.entities[fact.value].name
        changed |= set(qa.world.set_fact(fact.subject, fact.relation, new))
        asked_after.append((QAExample(ex.id, ex.question, [qa.world.entities[new].name], meta=dict(ex.meta)), old_name))
    report = replace_documents(qa, changed)
    after = predict(qa, [ex for ex, _ in asked_after])
    n = len(chosen)
    report.update(system=qa.name, facts_asked=n_facts, facts_changed=n,
                  old_value_before=round(sum(r["correct"] for r in before) / n, 4),
                  new_value_returned=round(sum(r["correct"] for r in after) / n, 4),
                  old_value_after=round(sum(exact_match(r["prediction"], [old]) for r, (_, old)
                                            in zip(after, asked_after)) / n, 4))
    text_of = {b.id: b.text for b in qa.blocks}
    report["examples"] = [{"question": ex.question, "old": old, "new": ex.answers[0], "before": b["prediction"],
                           "after": a["prediction"], "read": [z["title"] for z in a.get("retrieved", [])],
                           "old_in_read": any(contains_answer(text_of[z["block"]], [old]) for z in a.get("retrieved", []))}
                          for (ex, old), b, a in zip(asked_after, before, after)]
    # where the old value still came back: was it in a block read after the update, or only in the weights?
    old_after = [e for e in report["examples"] if exact_match(e["after"], [e["old"]])]
    report["old_after_found_in_read_blocks"] = sum(e["old_in_read"] for e in old_after)
    report["old_after_not_in_any_read_block"] = len(old_after) - report["old_after_found_in_read_blocks"]
    log(f"knowledge update ({qa.name}): {n} facts changed in {report['documents_changed']} documents, "
        f"{report['blocks_reembedded']} blocks re-embedded; old value returned before {report['old_value_before']}, "
        f"new value returned after {report['new_value_returned']} (old after {report['old_value_after']})")
    return report
