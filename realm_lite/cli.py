"""`realm-lite` command line: world, corpus, pretrain, finetune, evaluate, update, export, explore, demo."""
from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import time
from pathlib import Path

from realm_lite.config import PRESETS, QA_SYSTEMS  # torch-free: `realm-lite --help` imports neither torch nor transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub name otherwise takes ~50 s to fail offline; opt in with 0


def _config(args):
    from realm_lite.config import get_config, parse_overrides

    return get_config(args.preset, **parse_overrides(args.set or []))


def cmd_world(args) -> None:
    from realm_lite.world import World

    cfg = _config(args)
    world = World.generate(cfg)
    world.save(args.out)
    cfg.save(args.out)
    print(f"world written to {args.out}: {world.summary()}")


def cmd_corpus(args) -> None:
    from realm_lite.corpus import prepare_corpus

    cfg = _config(args)
    prepared = prepare_corpus(args.corpus, cfg, args.out)
    print(f"blocks written to {args.out}: {prepared.stats}")


def cmd_demo(args) -> None:
    """The quick end-to-end path: world -> WordPiece -> blocks -> masking -> warm starts + REALM -> open QA."""
    for flag, value in (("--examples", args.examples), ("--update-facts", args.update_facts)):
        if value < 0:
            raise ValueError(f"{flag} {value}: must be 0 or more")
    t0 = time.time()
    cfg = _config(args)
    from realm_lite.corpus import prepare_corpus
    from realm_lite.display import show_masked
    from realm_lite.masking import STRATEGIES, get_tagger, mask, sentence_spans

    if args.corpus == "world":  # it pre-trains: a missing GPU is an error before the corpus is prepared
        from realm_lite.pretrain import resolve_device

        resolve_device(cfg.device)
    out = Path(args.out)
    prepared = prepare_corpus(args.corpus, cfg, out)
    tok, blocks = prepared.tokenizer, prepared.blocks
    tagger_name, tagger = get_tagger()
    annotated = blocks[0].spans is not None
    print(f"corpus      {args.corpus}: {prepared.stats['passages']} documents -> {len(blocks)} blocks "
          f"of <= {cfg.block_len} wordpieces")
    if prepared.world is not None:
        print(f"world       {prepared.world.summary()}")
    print(f"tokenizer   {'WordPiece trained on the corpus' if not cfg.tokenizer else cfg.tokenizer}, "
          f"{len(tok)} wordpieces -> {out / 'tokenizer'}")
    print(f"spans       {'corpus annotations' if annotated else 'tagger ' + tagger_name}")
    rng = random.Random(cfg.seed)
    for block in rng.sample(blocks, min(args.examples, len(blocks))):
        sentences = [s for s in sentence_spans(block, tagger) if s[1] and (s[2] or not annotated)]
        if not sentences:
            continue
        text, spans, _ = rng.choice(sentences)
        print(f"\n[{block.id}] {block.title}\n  x: {text}")
        for strategy in STRATEGIES:
            ex = mask(text, spans, tok, cfg, rng, strategy)
            if ex is not None:
                print(f"  {strategy:<13} {show_masked(ex, tok)}")
            if strategy == "salient" and ex is not None and prepared.world is not None:
                facts = next((s.facts for s in spans if (s.start, s.end) == ex.span), [])
                others = {d for f in facts for d in prepared.world.docs_stating(f)} - {block.doc_id}
                if others:
                    titles = ", ".join(prepared.world.document(d).title for d in sorted(others))
                    print(f"  {'':<13} the answer is also stated in: {titles}")
    if args.corpus == "world":  # the synthetic world knows its gold documents: pre-train and evaluate
        from realm_lite.pretrain import metrics_table, pretrain

        print(f"\nwarm starts ({cfg.warm_start}: {cfg.ict_steps} steps, reader: {cfg.reader_warmup_steps} steps) and "
              f"REALM pre-training ({cfg.realm_steps} steps) -> {out / 'pretrain'}")
        metrics = pretrain("world", cfg, out / "pretrain", log=lambda s: None)
        print(metrics_table(metrics))
        from realm_lite.finetune import compare_systems, qa_table

        t1 = time.time()
        print(f"\nopen-QA fine-tuning ({cfg.qa_steps} steps of {cfg.qa_batch} questions; Embed_doc frozen) and "
              f"evaluation on the world's test questions, with the knowledge update ({args.update_facts} facts "
              f"changed, their blocks re-embedded) -> {out / 'qa'}")
        results = compare_systems(out / "pretrain", "world", out / "qa", update_facts=args.update_facts,
                                  log=lambda s: None)
        print(qa_table(results))
        print(f"(QA stage {time.time() - t1:.0f}s)")
    print(f"\ndone in {time.time() - t0:.1f}s; outputs in {out}/")
    if cfg.preset == "quick":
        print("quick is a smoke run of every stage: a few dozen steps, so its accuracies are near 0 by design. "
              "What REALM learns comes from --preset cpu: README.md, Results, and docs/results.md.")
    if args.shipped:
        show_shipped()


def show_shipped(n_sentences: int = 20, n_questions: int = 3) -> None:
    """The cpu preset's trained model (shipped with the package) retrieving for held-out sentences and answering
    test questions, with the blocks it read (realm_lite.explain)."""
    import json

    from realm_lite.explain import explain_masked, explain_question, format_explanation
    from realm_lite.export import load_pretrained, load_qa
    from realm_lite.qa_data import load_qa as load_questions
    from realm_lite.shipped import shipped_path

    t0 = time.time()
    path = shipped_path("world-cpu")
    quality = json.loads((path / "quality.json").read_text())
    pre = load_pretrained(path)
    print(f"\nthe trained model that ships with the package: world-cpu (the cpu preset, {len(pre.blocks)} blocks; "
          f"realm_lite.load_pretrained(\"world-cpu\"), loaded in {time.time() - t0:.0f}s)")
    rows = [explain_masked(pre, x) for x in pre.heldout_queries(n_sentences)]
    right = [e for e in rows if e.correct]
    print(f"held-out sentences (their fact never masked in pre-training, the source block not retrievable): "
          f"{len(right)} of {len(rows)} filled in exactly; on {quality['heldout_queries']}: "
          f"{quality['realm']['acc_retrieval']:.2f} with retrieval, {quality['realm']['acc_null']:.2f} with the "
          f"null document alone. One right, one wrong (* = a gold block):")
    for e in [*right[:1], *[e for e in rows if not e.correct][:1]]:
        print(format_explanation(e))
    qa = load_qa(path, "realm")
    questions = load_questions("world", "test", world=qa.world, cfg=qa.cfg)[:n_questions]
    print(f"\nopen QA, its fine-tuned REALM (EM {quality['qa']['realm']['em']:.2f} on "
          f"{quality['test_questions']} test questions; * = the block holds the answer):")
    for ex in questions:
        print(format_explanation(explain_question(qa, ex.question, ex.answers), top=2))
    print("Explore it: realm-lite explore (a browser), or notebooks/08_explorer.ipynb.")


def cmd_pretrain(args) -> None:
    """Warm starts (the preset's; none with --cold-start), REALM pre-training, evaluation; metrics.json in --out."""
    overrides = {}
    if args.masking:
        overrides["masking"] = args.masking
    if args.cold_start:
        overrides["warm_start"] = "none"
    if args.resume and (overrides or args.set):
        raise ValueError("--resume continues a run with its saved config; drop --masking/--cold-start/--set")
    from realm_lite.config import get_config, parse_overrides

    cfg = get_config(args.preset, **{**parse_overrides(args.set or []), **overrides})  # checked before torch loads
    from realm_lite.distributed import launched_group
    from realm_lite.pretrain import metrics_table, pretrain

    with launched_group(cfg.device) as dist:  # torchrun: one process per rank (a GPU each, else gloo on the CPU)
        if dist.world > 1 and not args.resume:
            cfg = cfg.replace(device=str(dist.device))
        metrics = pretrain(args.corpus, cfg, args.out, resume=args.resume, command=args.command_line, dist=dist)
    if dist.main:
        print(metrics_table(metrics))
        print(f"metrics written to {Path(args.out) / 'metrics.json'}")


def _print_metrics(metrics: dict) -> None:
    keys = [k for k in ("questions", "em", "top1", "top5") if k in metrics]
    print(f"{metrics['system']:<12} " + "  ".join(f"{k} {metrics[k]}" for k in keys))


def cmd_finetune(args) -> None:
    """Query-side QA fine-tuning of one system, initialised from a pre-training run (--init)."""
    from realm_lite.config import parse_overrides

    if args.resume and args.set:
        raise ValueError("--resume continues a run with its saved config; drop --set")
    overrides = parse_overrides(args.set or [])
    from realm_lite.distributed import launched_group
    from realm_lite.finetune import run_finetune

    with launched_group(overrides.get("device", "auto")) as dist:  # torchrun: one process per rank
        if dist.world > 1 and not args.resume:
            overrides["device"] = str(dist.device)
        qa = run_finetune(args.init, args.system, args.dataset, args.out, overrides, resume=args.resume,
                          command=args.command_line, dist=dist)
    if dist.main:
        print(f"fine-tuned {qa.name} written to {args.out} ({qa.info.get('finetune_seconds')}s)")


def cmd_evaluate(args) -> None:
    """EM and top-k retrieval accuracy of a fine-tuned system; predictions JSONL and metrics JSON."""
    from realm_lite.finetune import load_system, run_evaluate

    qa = load_system(args.model)
    dataset = args.dataset or qa.info.get("dataset", "world")
    if not args.dataset and ":" in dataset and not dataset.startswith("squad"):
        raise ValueError(f"{args.model} was fine-tuned on the file {dataset}; name the file to evaluate on "
                         f"with --dataset {dataset.split(':')[0]}:PATH")
    out = args.out or args.model
    metrics = run_evaluate(qa, dataset, args.split, out)
    _print_metrics(metrics)
    print(f"predictions and metrics written to {out}/predictions-{args.split}.jsonl, metrics-{args.split}.json")


def cmd_update(args) -> None:
    """The knowledge update: change facts in the world, re-embed only the changed blocks, ask again."""
    import json

    if args.facts < 1:
        raise ValueError(f"--facts {args.facts}: the knowledge update changes 1 fact or more")
    from realm_lite.finetune import load_system
    from realm_lite.io import atomic_write_text
    from realm_lite.qa_data import load_qa
    from realm_lite.update import knowledge_update

    qa = load_system(args.model)
    examples = load_qa("world", args.split, world=qa.world, cfg=qa.cfg)
    report = knowledge_update(qa, examples, n_facts=args.facts, seed=args.seed)
    out = Path(args.out or args.model) / "knowledge-update.json"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"report written to {out}")


def cmd_export(args) -> None:
    """A finished pre-training run (and --qa systems) as a from_pretrained-style directory."""
    from realm_lite.export import export_run

    info = export_run(args.run, args.out, qa_dirs=args.qa, dtype=args.dtype, overwrite=args.overwrite,
                      command=args.command_line, quality=args.quality)
    weights = info["files"]["model.safetensors"]
    qa = f"; QA systems: {', '.join(info['qa'])}" if info["qa"] else ""
    print(f"exported {args.run} to {args.out}: {info['total_bytes'] / 1e6:.1f} MB in {len(info['files'])} files "
          f"(model.safetensors {weights / 1e6:.1f} MB, {info['dtype']}){qa}")


def cmd_explore(args) -> None:
    """The retrieval explorer (realm_lite.explorer) as a web page, served by Voilà."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("voila") is None:
        raise ImportError("the explorer is served by Voilà, which is not installed: "
                          "pip install 'realm-lite[notebooks]' (or pip install voila)")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: a TCP port, 1 to 65535")
    from realm_lite.explorer import ENV_MODELS, ModelChoice, app_notebook

    for path in args.model or []:
        ModelChoice.from_directory(path)  # a wrong directory is named now, not in the browser
    env = dict(os.environ)
    env[ENV_MODELS] = os.pathsep.join(str(Path(p).resolve()) for p in args.model or [])
    cmd = [sys.executable, "-m", "voila", str(app_notebook()), f"--port={args.port}", f"--Voila.ip={args.ip}",
           "--theme=light", "--show_tracebacks=True"]
    if args.no_browser:
        cmd.append("--no-browser")
    print(f"the explorer: http://{args.ip}:{args.port}/ (loading the model takes ~10 s on first view; Ctrl-C stops)",
          flush=True)
    try:
        subprocess.run(cmd, env=env, check=False)
    except KeyboardInterrupt:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="realm-lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, corpus=True):
        p.add_argument("--preset", default="quick", help=f"{' | '.join(PRESETS)} (see realm_lite.config)")
        p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. seed=1")
        p.add_argument("--out", required=True, help="output directory")
        if corpus:
            p.add_argument("--corpus", default="world", help="world | squad | a file (.json .tsv .jsonl .txt)")

    p = sub.add_parser("world", help="generate the synthetic encyclopedia as JSONL")
    common(p, corpus=False)
    p.set_defaults(fn=cmd_world)
    p = sub.add_parser("corpus", help="tokenizer and REALM blocks for a corpus")
    common(p)
    p.set_defaults(fn=cmd_corpus)
    p = sub.add_parser("demo", help="the quick end-to-end path, with a short summary")
    common(p)
    p.add_argument("--examples", type=int, default=3, help="masked examples to show")
    p.add_argument("--update-facts", type=int, default=20, help="facts changed in the knowledge update")
    p.add_argument("--no-shipped", dest="shipped", action="store_false",
                   help="do not end with the shipped world-cpu model retrieving and answering")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("pretrain", help="warm starts, then REALM pre-training with index refresh")
    common(p)
    p.add_argument("--masking", choices=["salient", "random-token", "random-span"], help="default: the preset's")
    p.add_argument("--cold-start", "--no-ict", action="store_true",
                   help="the cold-start control: no retriever warm start (a randomly initialised retriever)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("finetune", help="open-QA fine-tuning of one system from a pre-training run")
    p.add_argument("--init", required=True, help="the pre-training run directory (realm-lite pretrain --out)")
    p.add_argument("--system", choices=QA_SYSTEMS, default="realm", help="realm | ict | bm25 | closed-book")
    p.add_argument("--dataset", default="world",
                   help="world | squad[:DIR] | nq-open:PATH | webquestions:PATH | curatedtrec:PATH (train split)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. qa_steps=100")
    p.add_argument("--out", required=True, help="output directory of the QA run")
    p.add_argument("--resume", action="store_true", help="continue the QA run in --out from its last checkpoint")
    p.set_defaults(fn=cmd_finetune)
    p = sub.add_parser("evaluate", help="EM and top-k retrieval accuracy of a fine-tuned system")
    p.add_argument("--model", required=True, help="a QA run directory (realm-lite finetune --out)")
    p.add_argument("--dataset", help="default: the data set it was fine-tuned on")
    p.add_argument("--split", default="test", help="train | dev | test | all (file data sets: the file is the split)")
    p.add_argument("--out", help="where predictions-SPLIT.jsonl and metrics-SPLIT.json go (default: --model)")
    p.set_defaults(fn=cmd_evaluate)
    p = sub.add_parser("update", help="knowledge update: change world facts, re-embed changed blocks, ask again")
    p.add_argument("--model", required=True, help="a QA run fine-tuned on the synthetic world")
    p.add_argument("--facts", type=int, default=50, help="how many facts to change")
    p.add_argument("--split", default="test", help="whose questions' facts are changed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where knowledge-update.json goes (default: --model)")
    p.set_defaults(fn=cmd_update)
    p = sub.add_parser("export", help="a finished pre-training run as a from_pretrained-style directory")
    p.add_argument("run", help="the pre-training run directory (realm-lite pretrain --out)")
    p.add_argument("out", help="the export directory to write")
    p.add_argument("--qa", nargs="*", metavar="QA_DIR",
                   help="fine-tuned QA runs to include (realm-lite finetune --out)")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="the weights' dtype on disk")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export directory")
    p.add_argument("--quality", type=int, default=0, metavar="N",
                   help="measure the written export on N held-out queries and N test questions (quality.json)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("explore", help="the retrieval explorer in a browser (Voilà)")
    p.add_argument("--model", nargs="*", metavar="DIR", help="run or export directories to offer besides world-cpu")
    p.add_argument("--port", type=int, default=8866, help="the port to serve on (default 8866)")
    p.add_argument("--ip", default="127.0.0.1", help="the address to serve on (default: this machine only)")
    p.add_argument("--no-browser", action="store_true", help="serve without opening a browser")
    p.set_defaults(fn=cmd_explore)

    args = parser.parse_args(argv)
    args.command_line = shlex.join(["realm-lite", *(sys.argv[1:] if argv is None else argv)])
    try:
        args.fn(args)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, ImportError, OSError) as e:
        print(f"realm-lite {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
