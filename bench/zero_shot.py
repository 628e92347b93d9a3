"""Zero-shot answer recall on open-domain questions: a retriever before any QA fine-tuning, beside BM25 on the same blocks.

    python bench/zero_shot.py --corpus squad --set backbone=minilm pooling=cls proj_dim=0 block_len=256
    python bench/zero_shot.py --corpus squad --init runs/squad-text       # a pre-training run's retriever
    python bench/zero_shot.py --corpus world --preset quick               # a smoke run (seconds)

The corpus is cut into blocks as pre-training cuts it (`realm_lite.corpus.prepare_corpus`, under --runs); the
retriever is either the preset's towers as built (`backbone=` a pretrained checkpoint: its own sentence geometry;
none: random weights) or, with --init, the Embed_input/Embed_doc of a finished `realm-lite pretrain` run. For each
question of --split, recall@k is whether an answer string occurs in one of the k blocks with the highest
f(x, z) = Embed_input(x)^T Embed_doc(z); BM25 (bm25s) ranks the same blocks by their `title text`. The paper's
Table 2 reports this before fine-tuning as "zero-shot retrieval recall@5". Results go to
bench/results/zero_shot-<corpus>-<name>.json (--name, default the preset).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

from common import RESULTS, machine  # noqa: E402
from realm_lite.config import get_config, parse_overrides  # noqa: E402
from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.qa_data import load_qa  # noqa: E402
from realm_lite.qa_eval import contains_answer  # noqa: E402
from realm_lite.refresh import build_index  # noqa: E402
from realm_lite.retriever import encode_queries  # noqa: E402


def ranked(search, examples, n: int, batch_size: int = 64) -> list[list[int]]:
    """The top-n block ids of every question, by `search(questions, n) -> (B, n) ids`."""
    out = []
    for i in range(0, len(examples), batch_size):
        out += search([ex.question for ex in examples[i:i + batch_size]], n).tolist()
    return out


def recall(tops: list[list[int]], examples, blocks, ks) -> dict:
    """recall@k: the fraction of questions with an answer-bearing block among the first k of their ranking."""
    first = [next((r for r, j in enumerate(row) if contains_answer(blocks[j].text, ex.answers, ex.regex)), None)
             for ex, row in zip(examples, tops)]
    return {f"recall@{k}": round(sum(r is not None and r < k for r in first) / len(examples), 4) for k in ks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="squad", help="squad | world (the corpus and its questions)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--init", default=None, metavar="RUN", help="a finished pre-training run: its retriever")
    ap.add_argument("--split", default="test", help="train | dev | test | all")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--runs", default="runs/zero_shot", help="where the corpus is prepared")
    ap.add_argument("--name", default=None, help="the results file's name (default: the preset, or the run's)")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/zero_shot-<corpus>-<name>.json)")
    args = ap.parse_args(argv)
    if min(args.k) < 1:
        ap.error(f"--k {args.k}: every k at least 1")

    from realm_lite.pretrain import load_run, resolve_device
    from realm_lite.qa import build_bm25
    from realm_lite.realm import Realm
    from realm_lite.training import load_checkpoint

    t0 = time.time()
    if args.init:
        if args.set:
            ap.error("--set changes how a run is built: pass it to `realm-lite pretrain`, not with --init")
        cfg, blocks, tok, world = load_run(args.init)
        device = resolve_device(cfg.device)
        model = Realm(cfg, len(tok))
        model.load_state_dict(load_checkpoint(Path(args.init) / "checkpoint.pt", "pre-training checkpoint")["model"])
        retriever = model.retriever.to(device).eval()
        name = args.name or Path(args.init).name
    else:
        from realm_lite.corpus import prepare_corpus
        from realm_lite.retriever import Retriever

        cfg = get_config(args.preset, **parse_overrides(args.set), progress=False)
        device = resolve_device(cfg.device)
        run = Path(args.runs) / f"{args.corpus}-{args.preset}"
        corpus = prepare_corpus(args.corpus, cfg, run)
        blocks, tok, world = corpus.blocks, corpus.tokenizer, corpus.world
        torch.manual_seed(cfg.seed)
        retriever = Retriever(cfg, len(tok)).to(device).eval()
        name = args.name or args.preset
    examples = load_qa(args.corpus, args.split, world=world, cfg=cfg)
    if not examples:
        raise SystemExit(f"no {args.split} questions for {args.corpus}")
    n = min(max(args.k), len(blocks))

    t1 = time.time()
    index = build_index(retriever.embed_doc, blocks, tok, cfg, device)
    embed_s = time.time() - t1

    @torch.no_grad()
    def dense(questions, n):
        q = retriever.embed_input(**encode_queries(questions, tok, cfg.query_len, device)).float()  # (B, D)
        return index.search(q, n)[1]  # (B, n)

    bm25, btok = build_bm25(blocks)

    def sparse(questions, n):
        top, _ = bm25.retrieve(btok.tokenize(questions, update_vocab=False, show_progress=False, return_as="tuple"),
                               k=n, show_progress=False)
        return torch.as_tensor(top)

    rows = [{"retriever": f"dense ({'the run' if args.init else cfg.backbone or 'random weights'})",
             **recall(ranked(dense, examples, n), examples, blocks, args.k), "embed_seconds": round(embed_s, 1)},
            {"retriever": "bm25", **recall(ranked(sparse, examples, n), examples, blocks, args.k)}]
    result = {"corpus": args.corpus, "split": args.split, "questions": len(examples), "blocks": len(blocks),
              "init": args.init, "preset": cfg.preset, "overrides": parse_overrides(args.set),
              "config": {k: getattr(cfg, k) for k in ("backbone", "pooling", "proj_dim", "block_len", "query_len")},
              "rows": rows, "seconds": round(time.time() - t0, 1), "machine": machine(device),
              "command": " ".join(["python bench/zero_shot.py"] + (argv if argv is not None else sys.argv[1:]))}
    print(f"{args.corpus} {args.split}: {len(examples)} questions, {len(blocks)} blocks of {cfg.block_len} wordpieces")
    print(f"{'retriever':<28}" + "".join(f"{f'recall@{k}':>11}" for k in args.k))
    for r in rows:
        print(f"{r['retriever']:<28}" + "".join(f"{r[f'recall@{k}']:>11.3f}" for k in args.k))
    out = Path(args.out) if args.out else RESULTS / f"zero_shot-{args.corpus}-{name}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
