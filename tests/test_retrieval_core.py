"""The retrieval core: retriever towers, ICT, MIPS index, marginal likelihood, index refresh."""
import math
import os
import random

import pytest
import torch

from realm_lite.ict import ict_pair, train_ict
from realm_lite.marginal import (KnowledgeAugmentedEncoder, join_inputs, marginal_gain, marginal_log_likelihood,
                                 pad_targets, relevance_gradient, retrieval_utility, top_retrieval_utility)
from realm_lite.masking import mask_salient_span, sentence_spans
from realm_lite.mips import MipsIndex, fingerprint
from realm_lite.refresh import IndexRefresher
from realm_lite.retriever import (Retriever, build_bert, embed_blocks, embed_in_bf16, encode_blocks, encode_queries,
                                  tokenize_blocks)


@pytest.fixture(scope="module")
def retriever(cfg, tokenizer):
    torch.manual_seed(0)
    return Retriever(cfg, len(tokenizer))


def test_towers_shapes_and_relevance(retriever, blocks, tokenizer, cfg):
    q = retriever.embed_input(**encode_queries(["Who founded it?", "Where?"], tokenizer, cfg.query_len))
    z = retriever.embed_doc(**encode_blocks([b.title for b in blocks[:3]], [b.text for b in blocks[:3]],
                                            tokenizer, cfg.block_len))
    assert q.shape == (2, cfg.proj_dim) and z.shape == (3, cfg.proj_dim)
    assert torch.allclose(retriever.relevance(q, z), q @ z.T)
    assert torch.allclose(retriever.relevance(q, z.unsqueeze(0).expand(2, 3, -1)), q @ z.T, atol=1e-6)


def test_proj_dim_0_compares_the_pooled_states_themselves(cfg, blocks, tokenizer):
    """A pretrained sentence encoder's states, unprojected: f(x, z) = [CLS](x)^T [CLS](z), d = H."""
    torch.manual_seed(0)
    r = Retriever(cfg.replace(proj_dim=0, pooling="cls"), len(tokenizer)).eval()
    enc = encode_queries(["Who founded it?", "Where?"], tokenizer, cfg.query_len)
    with torch.no_grad():
        q = r.embed_input(**enc)
        assert q.shape == (2, cfg.hidden) and r.embed_doc.dim == cfg.hidden
        assert torch.equal(q, r.embed_input.bert(**enc).last_hidden_state[:, 0])
        z = embed_blocks(r.embed_doc, blocks[:5], tokenizer, cfg.block_len, autocast=False)  # (5, H)
    assert z.shape == (5, cfg.hidden) and not list(r.embed_input.proj.parameters())


def test_relevance_is_float32_under_bf16_autocast(retriever, blocks, tokenizer, cfg):
    """f(x, z) = the float32 product of the towers' outputs, though the towers run in bf16 under autocast."""
    from realm_lite.queries import QueryPool
    from realm_lite.realm import BlockInputs, Realm, candidate_scores, embed_queries

    retriever.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        q = retriever.embed_input(**encode_queries(["Who founded it?", "Where?"], tokenizer, cfg.query_len))
        z = retriever.embed_doc(**encode_blocks([b.title for b in blocks[:3]], [b.text for b in blocks[:3]],
                                                tokenizer, cfg.block_len))
        f2, f3 = retriever.relevance(q, z), retriever.relevance(q, z.unsqueeze(0).expand(2, 3, -1))
        bf16 = q @ z.T  # what autocast alone would give
    retriever.train()
    assert q.dtype == z.dtype == torch.bfloat16 and f2.dtype == f3.dtype == torch.float32
    assert torch.equal(f2, q.float() @ z.float().T)
    assert torch.equal(f3, torch.einsum("bd,bkd->bk", q.float(), z.float().unsqueeze(0).expand(2, 3, -1)))
    assert not torch.equal(bf16.float(), f2)  # the precision the float32 product keeps

    torch.manual_seed(0)
    model, inputs = Realm(cfg, len(tokenizer)).eval(), BlockInputs(blocks, tokenizer, cfg.block_len)
    queries = QueryPool(blocks, tokenizer, cfg).sample(random.Random(0), 2)
    top = torch.tensor([[3, 5], [7, 9]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = embed_queries(model, queries, tokenizer.pad_token_id, "cpu")
        scores = candidate_scores(model, x, top, inputs, "cpu")  # (B, K) over [∅, z_1, z_2]
        docs = model.retriever.embed_doc(**inputs.doc_batch([3, 5, 7, 9], "cpu", null=True))  # (5, D)
    cands = torch.stack([docs[[0, 1, 2]], docs[[0, 3, 4]]]).float()  # (B, K, D)
    assert scores.dtype == torch.float32 and torch.equal(scores, torch.einsum("bd,bkd->bk", x.float(), cands))


def test_embed_in_bf16_auto_follows_the_device_and_the_cpu(cfg, monkeypatch):
    for cap, fast in (("AVX512", True), ("AVX2", False), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda cap=cap: cap)
        assert embed_in_bf16(cfg.replace(embed_bf16="auto"), "cpu") is fast
        for gpu_has_bf16 in (True, False):  # an A100 or H100; a V100 or T4
            monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, v=gpu_has_bf16, **k: v)
            assert embed_in_bf16(cfg.replace(embed_bf16="auto"), "cuda") is gpu_has_bf16
        assert embed_in_bf16(cfg.replace(embed_bf16="on"), "cpu") is True
        assert embed_in_bf16(cfg.replace(embed_bf16="off"), torch.device("cuda")) is False


def test_dropout_reaches_every_encoder(tokenizer, cfg):
    import torch.nn as nn
    for p in (0.0, 0.25):
        bert = build_bert(cfg.replace(dropout=p), 1, len(tokenizer))
        assert {m.p for m in bert.modules() if isinstance(m, nn.Dropout)} == {p}


def test_pretrained_reader_keeps_its_lower_layers_and_the_towers_stay_from_scratch(cfg):
    """reader_backbone: the knowledge-augmented encoder from MiniLM's lower layers, MLM head tied to its embeddings."""
    from transformers import BertModel

    from realm_lite.realm import Realm
    from realm_lite.tokenizer import get_tokenizer, resolve_checkpoint

    c = cfg.replace(reader_backbone="minilm", reader_backbone_layers=2)
    tok = get_tokenizer(c)  # the reader's backbone decides the vocabulary
    assert len(tok) == 30522
    realm = Realm(c, len(tok))
    full = BertModel.from_pretrained(resolve_checkpoint("minilm"), add_pooling_layer=False)
    reader = realm.reader.bert
    assert len(reader.encoder.layer) == reader.config.num_hidden_layers == 2 and reader.config.hidden_size == 384
    for mine, theirs in zip(reader.encoder.layer, full.encoder.layer[:2]):  # the lower layers, unchanged
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
    assert torch.equal(reader.embeddings.word_embeddings.weight, full.embeddings.word_embeddings.weight)
    assert realm.retriever.embed_input.bert.config.hidden_size == cfg.hidden  # the towers: from scratch, cfg's sizes
    enc = join_inputs([tok("Who founded Merkstead?")["input_ids"]], [[[]]], tok.sep_token_id, tok.pad_token_id, 0)
    logp = realm.reader.token_log_probs(**enc, masked_positions=torch.tensor([[1]]))  # (1, 1, V): tied head
    assert logp.shape == (1, 1, 30522)
    with pytest.raises(ValueError, match="vocabulary of 30522"):  # a tokenizer larger than the backbone's table
        build_bert(cfg, 2, 40000, backbone="minilm")


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_bert_checkpoint_starts_the_reader_as_its_masked_lm(cfg, tmp_path, weights):
    """From a BertForMaskedLM checkpoint, p(y_j|z,x) before any training is that model's masked-LM distribution:
    the head's transform and bias come from the checkpoint, as the paper initialises REALM from BERT."""
    from transformers import BertConfig, BertForMaskedLM

    from realm_lite.realm import Realm

    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)).eval()
    with torch.no_grad():  # a head unlike a fresh one in every tensor
        for p in (mlm.cls.predictions.bias, mlm.cls.predictions.transform.LayerNorm.weight,
                  mlm.cls.predictions.transform.LayerNorm.bias):
            p.normal_()
    ckpt = tmp_path / "bert-mlm"
    if weights == "model.safetensors":
        mlm.save_pretrained(ckpt)
    else:  # the older format, as bert-base-uncased's first upload
        mlm.config.save_pretrained(ckpt)
        torch.save(mlm.state_dict(), ckpt / weights)
    assert [f.name for f in ckpt.glob("*_model.bin")] + [f.name for f in ckpt.glob("*.safetensors")] == [weights]
    realm = Realm(cfg.replace(backbone=str(ckpt), dropout=0.0), 90).eval()
    ids = torch.randint(5, 90, (2, 12))  # (N, L)
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    pos = torch.tensor([[3, 7], [1, 10]])  # (N, M)
    with torch.no_grad():
        ours = realm.reader.token_log_probs(ids, mask, types, pos)  # (N, M, V)
        logits = mlm(input_ids=ids, attention_mask=mask, token_type_ids=types).logits  # (N, L, V)
    theirs = torch.log_softmax(logits, -1).gather(1, pos.unsqueeze(-1).expand(-1, -1, 90))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_without_a_masked_lm_head_leaves_the_head_as_initialised(tmp_path):
    """all-MiniLM-L6-v2 is a sentence encoder: its weights hold no masked-LM head, and the reader's head is fresh."""
    from realm_lite.marginal import checkpoint_mlm_head
    from realm_lite.tokenizer import resolve_checkpoint

    assert checkpoint_mlm_head(resolve_checkpoint("minilm")) is None
    with pytest.raises(OSError, match="no model.safetensors or pytorch_model.bin in checkpoint"):
        checkpoint_mlm_head(str(tmp_path))


def test_doc_input_is_cls_title_sep_body_sep(tokenizer, cfg):
    enc = encode_blocks(["Merkstead"], ["A city."], tokenizer, cfg.block_len)
    toks = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert toks[0] == "[CLS]" and toks.count("[SEP]") == 2 and toks[-1] == "[SEP]"


def test_join_and_pad_by_hand():
    """join_BERT(x, z) = `[CLS] x [SEP] z [SEP]`, types 0 over x and 1 over `z [SEP]`, padded on the right."""
    from realm_lite.batching import join, pad

    enc = join([[101, 7, 102], [101, 102]], [[5, 6], []], sep_id=102, pad_id=0)  # the second z is ∅
    assert enc["input_ids"].tolist() == [[101, 7, 102, 5, 6, 102], [101, 102, 102, 0, 0, 0]]
    assert enc["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]]
    assert enc["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert pad([[3], [4, 5, 6]], -100).tolist() == [[3, -100, -100], [4, 5, 6]]
    with pytest.raises(ValueError, match="2 queries x for 1 blocks"):
        join([[1], [2]], [[3]], 102, 0)


def test_ict_pair_removes_sentence(blocks):
    block = next(b for b in blocks if len(b.sentences) >= 3)
    q, ctx = ict_pair(block, random.Random(0), remove_prob=1.0)
    assert q in block.text and q not in ctx
    q, ctx = ict_pair(block, random.Random(0), remove_prob=0.0)
    assert q in ctx


@pytest.mark.slow
def test_ict_learns_on_the_world(blocks, tokenizer, cfg):
    torch.manual_seed(0)
    r = Retriever(cfg.replace(ict_steps=30, log_every=10), len(tokenizer))
    hist = train_ict(r, blocks, tokenizer, cfg.replace(ict_steps=30, log_every=10), log=lambda s: None)
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_ict_recall_ranks_float32_corpus_rows_even_with_bf16_embedding_on(blocks, tokenizer, cfg, retriever,
                                                                          monkeypatch):
    """The corpus rows ICT recall searches are float32 embeddings, as its contexts and queries are."""
    import realm_lite.mips
    from realm_lite.ict import ict_recall, split_heldout

    seen = []
    monkeypatch.setattr(realm_lite.mips.MipsIndex, "search",
                        lambda self, q, k, exclude=None: seen.append((self.embeddings, q)) or
                        (torch.zeros(len(q), k), torch.zeros(len(q), k, dtype=torch.long)))
    heldout = split_heldout(blocks, 0.1, 0)[1]
    ict_recall(retriever, blocks, heldout, tokenizer, cfg.replace(embed_bf16="on"))
    (emb, q), = seen
    fp32 = embed_blocks(retriever.embed_doc, blocks, tokenizer, cfg.block_len, autocast=False)
    kept = [i for i in range(len(blocks)) if i not in set(heldout)]
    assert q.dtype == emb.dtype == torch.float32 and torch.equal(emb[kept], fp32[kept])
    bf16 = embed_blocks(retriever.embed_doc, blocks[:50], tokenizer, cfg.block_len, autocast=True)
    assert not torch.equal(bf16, fp32[:50])  # the rounding a bf16 corpus would have brought


def _clustered(n=600, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(12, d, generator=g) * 3
    return centers[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, d, generator=g) * 0.3


def test_exact_search_matches_brute_force_with_exclusion():
    emb, q = _clustered(), _clustered(20, seed=1)
    source = torch.randint(0, len(emb), (20,))
    s, i = MipsIndex(emb, "exact", chunk=97).search(q, 7, exclude=source)
    full = q @ emb.T
    full[torch.arange(20), source] = float("-inf")
    ts, ti = full.topk(7)
    assert torch.equal(i, ti) and torch.allclose(s, ts)
    assert not (i == source.unsqueeze(1)).any()


@pytest.mark.parametrize("backend,min_overlap", [("flat", 1.0), ("hnsw", 0.95), ("ivf", 0.8)])
def test_faiss_agrees_with_exact(backend, min_overlap):
    emb, q = _clustered(), _clustered(20, seed=1)
    exclude = [{int(a), int(a) + 1} for a in torch.randint(0, len(emb) - 1, (20,))]
    _, ie = MipsIndex(emb, "exact").search(q, 5, exclude=exclude)
    _, ib = MipsIndex(emb, backend).search(q, 5, exclude=exclude)
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ie, ib)) / ie.numel()
    assert overlap >= min_overlap
    assert all(not (set(row.tolist()) & ex) for row, ex in zip(ib, exclude))


def test_ivf_rows_with_fewer_than_k_results_are_completed_by_exact_search():
    """IVF probing one list finds fewer than k blocks for some queries (FAISS pads with -1): never -1 comes back."""
    emb, q = _clustered(), _clustered(20, seed=1)
    ivf = MipsIndex(emb, "ivf", nprobe=1)
    _, raw = ivf._faiss_index.search(q.numpy(), 30)
    short = (raw < 0).any(1)
    assert 0 < short.sum() < 20  # the case under test happens, and not for every row
    exclude = torch.randint(0, len(emb), (20,))
    for excl in (None, exclude):
        s, i = ivf.search(q, 30, exclude=excl)
        assert (i >= 0).all() and torch.isfinite(s).all()
        es, ei = MipsIndex(emb, "exact").search(q, 30, exclude=excl)
        rows = torch.from_numpy(short)
        assert torch.equal(i[rows], ei[rows]) and torch.allclose(s[rows], es[rows])  # the short rows: exact
        assert torch.equal(s, s.sort(dim=1, descending=True).values)
        if excl is not None:
            assert not (i == excl.unsqueeze(1)).any()


def test_more_neighbours_than_a_gpu_index_returns_are_searched_exactly(monkeypatch):
    """faiss-gpu's flat and IVF indexes return at most 2,048 neighbours (GPU_MAX_K): a larger k + exclusions goes to
    the exact search; up to the limit, FAISS answers. Here a CPU index stands for a GPU one with a limit of 8."""
    emb, q = _clustered(), _clustered(4, seed=1)
    ivf = MipsIndex(emb, "ivf", nprobe=1)
    assert ivf.max_k is None  # a CPU index has no limit
    ivf.max_k = 8
    faiss_search, asked = ivf._faiss_index.search, []

    def search(x, k):
        asked.append(k)
        return faiss_search(x, k)

    monkeypatch.setattr(ivf._faiss_index, "search", search)
    es, ei = MipsIndex(emb, "exact").search(q, 20, exclude=torch.arange(4))
    s, i = ivf.search(q, 20, exclude=torch.arange(4))
    assert torch.equal(i, ei) and torch.allclose(s, es)
    ivf.search(q, 7, exclude=torch.arange(4))  # 7 + 1 excluded: within the limit
    assert asked == [8]  # only the second search reached FAISS


def test_faiss_blas_threshold_is_set_once():
    import faiss

    MipsIndex(_clustered(), "flat")
    assert faiss.cvar.distance_compute_blas_threshold == 20
    faiss.cvar.distance_compute_blas_threshold = 7  # a user's own setting survives the next index
    try:
        MipsIndex(_clustered(), "flat").search(_clustered(3, seed=1), 2)
        assert faiss.cvar.distance_compute_blas_threshold == 7
    finally:
        faiss.cvar.distance_compute_blas_threshold = 20


def test_index_save_load_and_mismatch(tmp_path):
    emb = _clustered()
    MipsIndex(emb, "exact", version="v1").save(tmp_path / "i.pt")
    assert torch.equal(MipsIndex.load(tmp_path / "i.pt", expect_version="v1").embeddings, emb)
    with pytest.raises(ValueError, match="document encoder"):
        MipsIndex.load(tmp_path / "i.pt", expect_version="v2")
    with pytest.raises(ValueError, match="600 blocks"):
        MipsIndex.load(tmp_path / "i.pt", expect_size=10)
    (tmp_path / "bad.pt").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a readable"):
        MipsIndex.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        MipsIndex.load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="dimension"):
        MipsIndex(emb).search(torch.zeros(2, 3), 1)
    with pytest.raises(ValueError, match="backend"):
        MipsIndex(emb, "annoy")


def test_fingerprint_tracks_parameters(retriever):
    a = fingerprint(retriever.embed_doc)
    with torch.no_grad():
        retriever.embed_doc.proj.weight[0, 0] += 1
    assert fingerprint(retriever.embed_doc) != a
    with torch.no_grad():
        retriever.embed_doc.proj.weight[0, 0] -= 1


def test_gradient_identity():
    """Paper eq.: d log p(y|x) / d f(x,z) = [p(y|z,x) / p(y|x) - 1] p(z|x)."""
    torch.manual_seed(0)
    f = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    log_p_y_z = torch.randn(4, 8, dtype=torch.float64) - 2
    ll = marginal_log_likelihood(f, log_p_y_z)
    ll.sum().backward()
    p_z = torch.softmax(f.detach(), -1)
    expected = (log_p_y_z.exp() / ll.detach().exp().unsqueeze(1) - 1) * p_z
    assert torch.allclose(f.grad, expected)


def test_relevance_gradient_is_autograd_and_posterior_minus_prior():
    """r(z) from `relevance_gradient` equals autograd's d log p(y|x) / d f(x,z), and is positive exactly where
    p(y|z,x) > p(y|x)."""
    torch.manual_seed(1)
    f = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    log_p_y_z = torch.randn(3, 6, dtype=torch.float64) * 3 - 4
    ll = marginal_log_likelihood(f, log_p_y_z)
    ll.sum().backward()
    r = relevance_gradient(f, log_p_y_z)
    assert not r.requires_grad and r.shape == (3, 6)
    assert torch.allclose(r, f.grad, atol=1e-12)
    assert torch.equal(r > 0, log_p_y_z > ll.detach()[:, None])
    # by hand: p(z|x) = (1/2, 1/2), p(y|z,x) = (0.5, 0.1): p(y|x) = 0.3, r = [0.5/0.3 - 1, 0.1/0.3 - 1] / 2
    r = relevance_gradient(torch.zeros(1, 2), torch.tensor([[0.5, 0.1]]).log())
    assert torch.allclose(r, torch.tensor([[1 / 3, -1 / 3]]))
    # a reader that ignores z gives the retriever nothing; scores of -1e4 (float32) do not overflow
    assert torch.allclose(relevance_gradient(torch.tensor([[3.0, -1e4, 0.0]]), torch.full((1, 3), -2.0)),
                          torch.zeros(1, 3))


def test_retrieval_utility_and_marginal_gain_by_hand():
    """RU(z) = log p(y|z,x) - log p(y|∅,x) per document; the gain is log p(y|x) - log p(y|∅,x)."""
    p_y = [0.1, 0.4, 0.05]  # p(y|z,x) for [∅, z_1, z_2]
    f = [0.0, 2.0, 1.0]  # f(x, z)
    log_p_y_zx, scores = torch.tensor([p_y]).log(), torch.tensor([f])
    ru = retrieval_utility(log_p_y_zx)
    assert ru.shape == (1, 2) and torch.allclose(ru, torch.tensor([[math.log(4.0), math.log(0.5)]]))
    p_z = [math.exp(v) / sum(math.exp(u) for u in f) for v in f]
    p_y_x = sum(a * b for a, b in zip(p_z, p_y))  # 0.4 * 0.665 + ... = 0.3038
    assert math.isclose(marginal_gain(scores, log_p_y_zx).item(), math.log(p_y_x / 0.1), rel_tol=1e-5)
    # RU of the best-scored retrieved block; ∅'s own score is not a candidate for it
    assert math.isclose(top_retrieval_utility(scores, log_p_y_zx).item(), math.log(4.0), rel_tol=1e-5)
    assert math.isclose(top_retrieval_utility(torch.tensor([[9.0, 1.0, 2.0]]), log_p_y_zx).item(), math.log(0.5),
                        rel_tol=1e-5)
    two = retrieval_utility(torch.tensor([[-3.0, -1.0, -5.0, -3.0], [-2.0, -2.0, -0.5, -7.0]]))
    assert two.tolist() == [[2.0, -2.0, 0.0], [0.0, 1.5, -5.0]]


def _naive_log_p_y(model, query, body: list[int], sep_id: int) -> float:
    """log p(y | z, x) of one query and one block body (empty: ∅), the input and the sum written out."""
    ids = list(query.example.input_ids) + body + [sep_id]
    types = [0] * len(query.example.input_ids) + [1] * (len(body) + 1)
    logp = model.reader.token_log_probs(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                                        torch.tensor([types]), torch.tensor([query.example.masked_positions]))[0]
    return sum(logp[j, t].item() for j, t in enumerate(query.example.target_ids))


def test_realm_loss_and_evaluate_report_ru_of_the_best_block_the_gain_and_ru_of_the_gold_block(
        blocks, world, tokenizer, cfg):
    from realm_lite.pretrain import evaluate
    from realm_lite.queries import QueryPool
    from realm_lite.realm import BlockInputs, Realm, realm_loss
    from realm_lite.refresh import build_index

    torch.manual_seed(0)
    model = Realm(cfg, len(tokenizer)).eval()  # no dropout: the naive reads below see the same model
    inputs, pool = BlockInputs(blocks, tokenizer, cfg.block_len), QueryPool(blocks, tokenizer, cfg, world)
    index = build_index(model.retriever.embed_doc, blocks, tokenizer, cfg)
    sep = tokenizer.sep_token_id
    queries = pool.sample(random.Random(1), 3)
    with torch.no_grad():
        out = realm_loss(model, queries, index, inputs, k=4, device="cpu")
        ru, gain = [], []
        for q, row, f in zip(queries, out["top"].tolist(), out["scores"].tolist()):
            lp = [_naive_log_p_y(model, q, [], sep)] + [_naive_log_p_y(model, q, inputs.body_ids[j], sep) for j in row]
            best = max(range(1, 4), key=lambda c: f[c])
            ru.append(lp[best] - lp[0])
            p_z = [math.exp(v - max(f)) / sum(math.exp(u - max(f)) for u in f) for v in f]
            gain.append(math.log(sum(a * math.exp(b) for a, b in zip(p_z, lp))) - lp[0])
        assert math.isclose(out["ru"], sum(ru) / 3, abs_tol=1e-4) and math.isclose(out["gain"], sum(gain) / 3,
                                                                                      abs_tol=1e-4)
        held = pool.evaluation(6)
        m = evaluate(model, index, held, inputs, cfg, torch.device("cpu"))
        gold = [_naive_log_p_y(model, q, inputs.body_ids[min(q.gold)], sep) - _naive_log_p_y(model, q, [], sep)
                for q in held if q.gold]
        assert len(gold) == m["queries_with_gold"] == 6
        assert math.isclose(m["ru_gold"], sum(gold) / len(gold), abs_tol=1e-3)
        assert {"ru", "gain", "ru_gold"} <= set(m)


def test_knowledge_augmented_encoder_with_null_document(blocks, tokenizer, cfg):
    torch.manual_seed(0)
    reader = KnowledgeAugmentedEncoder(build_bert(cfg, cfg.reader_layers, len(tokenizer)))
    text, spans, _ = next(s for s in sentence_spans(blocks[0]) if s[1])
    ex = mask_salient_span(text, spans, tokenizer, random.Random(0), cfg.query_len)
    z_ids = [tokenizer(b.text, add_special_tokens=False)["input_ids"] for b in blocks[1:4]] + [[]]  # K=4, ∅ last
    inputs = join_inputs([ex.input_ids], [z_ids], tokenizer.sep_token_id, tokenizer.pad_token_id, cfg.block_len)
    pos, tgt = pad_targets([ex.masked_positions], [ex.target_ids], repeat=4)
    null_row = inputs["input_ids"][3][inputs["attention_mask"][3].bool()].tolist()
    assert null_row == ex.input_ids + [tokenizer.sep_token_id]  # [CLS] x [SEP] [SEP]
    assert (inputs["input_ids"][:, :len(ex.input_ids)] == torch.tensor(ex.input_ids)).all()  # positions unchanged
    tok = reader.token_log_probs(**inputs, masked_positions=pos)  # (4, M, V)
    assert torch.allclose(tok.logsumexp(-1), torch.zeros(tok.shape[:2]), atol=1e-5)  # normalised over V
    logp = reader(**inputs, masked_positions=pos, target_ids=tgt)  # (4,): log p(y | z, x)
    by_hand = [sum(tok[r, j, t].item() for j, t in enumerate(ex.target_ids)) for r in range(4)]
    assert logp.shape == (4,) and torch.allclose(logp, torch.tensor(by_hand), atol=1e-5)
    # the MLM head is tied to the word embeddings: the row of a wordpiece absent from every input reaches
    # the output only through the head, and a change to it shows there
    emb = reader.bert.embeddings.word_embeddings.weight
    v = next(i for i in range(len(tokenizer)) if not (inputs["input_ids"] == i).any())
    tok[:, :, v].sum().backward()
    assert emb.grad[v].abs().sum() > 0
    with torch.no_grad():
        emb[v] += torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(0))
        assert not torch.allclose(reader.token_log_probs(**inputs, masked_positions=pos)[:, :, v], tok[:, :, v])
        # with the head's hidden state zeroed the logits are its bias alone: log p(y|z,x) = -M log V for a zero bias
        reader.transform[2].weight.zero_()
        reader.transform[2].bias.zero_()
        expected = torch.full((4,), -len(ex.target_ids) * math.log(len(tokenizer)))
        assert torch.allclose(reader(**inputs, masked_positions=pos, target_ids=tgt), expected, atol=1e-4)


@pytest.mark.slow
def test_refresh_sync_async_and_dead_builder(blocks, tokenizer, cfg, retriever, tmp_path):
    logs = []
    ref = IndexRefresher(blocks, tokenizer, cfg, tmp_path, mode="sync", log=logs.append)
    ref.request(retriever.embed_doc, 0)
    assert ref.index is not None and len(ref.index) == len(blocks) and ref.staleness(7) == 7
    direct = embed_blocks(retriever.embed_doc, blocks, tokenizer, cfg.block_len, autocast=embed_in_bf16(cfg, "cpu"))
    assert not direct.requires_grad and torch.allclose(ref.index.embeddings, direct)

    ref = IndexRefresher(blocks, tokenizer, cfg, tmp_path, mode="async", log=logs.append)
    ref.request(retriever.embed_doc, 0)  # the first index is built in place
    ref.request(retriever.embed_doc, 10)
    assert ref.busy and ref.index_step == 0
    assert ref.poll(12, wait=True) and ref.index_step == 10 and ref.staleness(12) == 2
    builder = ref._proc.pid
    assert builder != os.getpid() and ref._ids == tokenize_blocks(blocks, tokenizer, cfg.block_len)
    ref.request(retriever.embed_doc, 20)
    assert ref._proc.pid == builder  # the same builder process, the corpus tokenized once
    ref.kill_builder()  # the builder dies mid-refresh
    assert not ref.poll(21, wait=True)
    assert ref.index_step == 10 and ref.failures == 1 and "continues on the index from step 10" in logs[-1]
    ref.request(retriever.embed_doc, 30)  # a new builder
    assert ref._proc.pid != builder and ref.poll(31, wait=True) and ref.index_step == 30
    assert torch.allclose(ref.index.embeddings, direct, atol=1e-5)  # the same tower, the same embeddings
    proc = ref._proc
    ref.close()
    assert proc.exitcode == 0  # asked to stop between refreshes, it ends cleanly
