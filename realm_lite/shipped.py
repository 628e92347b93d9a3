"""The trained models that ship with the package, and the record of their quality. Notebooks 06, 07 and 08.

    realm_lite.load_pretrained("world-cpu")      # the cpu preset's REALM on the synthetic world (realm_lite.export)
    realm_lite.load_qa("world-cpu", "realm")      # and its fine-tuned QA systems: realm, ict, bm25, closed-book
    check_quality("world-cpu")                    # measured now against quality.json, recorded at export

`make shipped` rebuilds realm_lite/pretrained/world-cpu from scratch: `realm-lite pretrain --preset cpu`, the four
`realm-lite finetune` runs, then `realm-lite export ... --quality 300`, which loads the written export back and
records in quality.json what it measures on the first 300 held-out queries and test questions. A change to the
library that breaks retrieval, reading or the export then shows as a difference from those numbers (tests).
"""
from __future__ import annotations

from pathlib import Path

SHIPPED = ("world-cpu",)
PRETRAIN_KEYS = ("recall@1", "recall@5", "acc_retrieval", "acc_null", "acc_gold")
QA_KEYS = ("em", "top1", "top5")


def shipped_path(name: str) -> Path:
    """The directory of a shipped model inside the installed package; an error naming how to rebuild it."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped model {name!r}; the package ships: {', '.join(SHIPPED)}")
    path = Path(__file__).parent / "pretrained" / name
    if not (path / "export.json").is_file():
        raise FileNotFoundError(f"the shipped model {name} is not in this installation ({path} has no export.json); "
                                f"rebuild it with `make shipped` in a clone of realm-lite")
    return path


def measure_quality(name_or_path, n: int = 300, device="cpu") -> dict:
    """Gold recall@k and masked-span accuracy with retrieval, with ∅ alone and with the gold block, on the first n
    held-out queries, for the REALM weights and the warm-start weights; EM and top-k on the first n test questions
    for each QA system."""
    import torch

    from realm_lite.export import WARMSTART_WEIGHTS, load_pretrained, load_qa, resolve
    from realm_lite.pretrain import evaluate
    from realm_lite.qa import evaluate_qa
    from realm_lite.qa_data import load_qa as load_questions

    if n < 1:
        raise ValueError(f"n {n}: measure on 1 query or more")
    path = resolve(name_or_path)
    out = {"heldout_queries": n, "test_questions": n}
    for weights in ("realm", "warmstart"):
        if weights == "warmstart" and not (path / WARMSTART_WEIGHTS).exists():
            continue
        pre = load_pretrained(path, device, weights)
        cfg = pre.cfg.replace(progress=False)
        with torch.no_grad():
            m = evaluate(pre.model, pre.index, pre.heldout_queries(n), pre.inputs, cfg, torch.device(device))
        out[weights] = {k: m[k] for k in PRETRAIN_KEYS if k in m}
    out["qa"] = {}
    for system in pre.info.get("qa", []):
        qa = load_qa(path, system, device)
        metrics, _ = evaluate_qa(qa, load_questions("world", "test", world=qa.world, cfg=qa.cfg)[:n])
        out["qa"][system] = {k: metrics[k] for k in QA_KEYS if k in metrics}
    return out


def flatten(quality: dict) -> dict:
    """{"realm/recall@5": 0.8, "qa/realm/em": 0.7, ...}: the numbers of a quality record, one key each."""
    flat = {}
    for weights in ("realm", "warmstart"):
        flat.update({f"{weights}/{k}": v for k, v in quality.get(weights, {}).items()})
    for system, m in quality.get("qa", {}).items():
        flat.update({f"qa/{system}/{k}": v for k, v in m.items()})
    return flat


def check_quality(name_or_path, tolerance: float = 0.03, device="cpu") -> list[tuple]:
    """(key, recorded, measured) for every number of quality.json measured again now and farther than `tolerance`
    from the recorded one (float sums differ between CPUs: a few queries of 300 may flip); empty when all agree."""
    import json

    from realm_lite.export import resolve

    path = resolve(name_or_path)
    file = path / "quality.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: export with --quality N to record it")
    recorded = json.loads(file.read_text())
    now = flatten(measure_quality(path, recorded["heldout_queries"], device))
    return [(k, v, now.get(k)) for k, v in flatten(recorded).items()
            if now.get(k) is None or abs(now[k] - v) > tolerance]
