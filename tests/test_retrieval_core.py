"""The retrieval core: retriever towers, ICT, MIPS index, marginal likelihood, index refresh."""
import random

import pytest
import torch

from realm_lite.corpus import make_blocks, world_passages
from realm_lite.ict import ict_pair, train_ict
from realm_lite.marginal import (KnowledgeAugmentedEncoder, join_inputs, marginal_log_likelihood, pad_targets,
                                 retrieval_utility)
from realm_lite.masking import mask_salient_span, sentence_spans
from realm_lite.mips import MipsIndex, fingerprint
from realm_lite.refresh import IndexRefresher
from realm_lite.retriever import Retriever, build_bert, embed_blocks, embed_in_bf16, encode_blocks, encode_queries


@pytest.fixture(scope="module")
def blocks(world, tokenizer, cfg):
    return make_blocks(world_passages(world), tokenizer, cfg.block_len)[0]


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


def test_embed_in_bf16_auto_follows_the_device_and_the_cpu(cfg, monkeypatch):
    for cap, fast in (("AVX512", True), ("AVX2", False), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda cap=cap: cap)
        assert embed_in_bf16(cfg.replace(embed_bf16="auto"), "cpu") is fast
        assert embed_in_bf16(cfg.replace(embed_bf16="auto"), "cuda") is True
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


def test_doc_input_is_cls_title_sep_body_sep(tokenizer, cfg):
    enc = encode_blocks(["Merkstead"], ["A city."], tokenizer, cfg.block_len)
    toks = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert toks[0] == "[CLS]" and toks.count("[SEP]") == 2 and toks[-1] == "[SEP]"


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
    assert torch.allclose(retrieval_utility(ll, log_p_y_z[:, 0]), ll - log_p_y_z[:, 0])


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
    logp = reader(**inputs, masked_positions=pos, target_ids=tgt)
    assert logp.shape == (4,) and (logp < 0).all()
    # the head is tied to the word embeddings
    assert reader.bert.embeddings.word_embeddings.weight.data_ptr() in {p.data_ptr() for p in reader.parameters()}


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
    ref.request(retriever.embed_doc, 20)
    ref.kill_builder()  # the builder dies mid-refresh
    assert not ref.poll(21, wait=True)
    assert ref.index_step == 10 and ref.failures == 1 and "continues on the index from step 10" in logs[-1]
    ref.close()
