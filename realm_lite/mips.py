"""Maximum inner product search over Embed_doc(z) (paper section 3.3). Notebook 03.

REALM needs the top k documents by f(x, z) over the whole corpus at every step. The embeddings
are precomputed (and so go stale while the doc tower trains: see realm_lite.refresh); search is
exact (a matmul and top-k, chunked) or approximate with FAISS. An approximate index can find fewer than k
blocks for a query (FAISS then pads with id -1); such rows are completed by exact search, so no id is ever -1.
faiss-gpu's flat and IVF indexes return at most 2,048 neighbours; a search for more (the `full` preset's QA
retrieves 5,000) is exact, in torch, on the index's device.

    index = MipsIndex(embeddings, backend="exact", version="step-500")
    scores, ids = index.search(queries, k=7, exclude=source_ids)     # (B, k), (B, k)
"""
from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from realm_lite.io import atomic_write_bytes

BACKENDS = ("exact", "flat", "ivf", "hnsw")
GPU_MAX_K = 2048  # faiss-gpu's limit on k for flat and IVF indexes


@functools.cache
def _faiss():
    """FAISS, imported on first use, with its BLAS threshold set once."""
    import faiss

    faiss.cvar.distance_compute_blas_threshold = 20  # BLAS from 20 queries on (default 128,000): faster batched search
    return faiss


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's parameters: the document-encoder version stamped into an index."""
    h = hashlib.sha1()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def exclusion_tensor(exclude, batch: int, device) -> torch.Tensor:
    """Exclusions as a (B, E) LongTensor padded with -1, from None, a (B,) tensor, or a list of ints/sets."""
    if exclude is None:
        return torch.full((batch, 0), -1, dtype=torch.long, device=device)
    if torch.is_tensor(exclude):
        t = exclude.to(device=device, dtype=torch.long)
        return t.unsqueeze(1) if t.dim() == 1 else t
    rows = [[e] if isinstance(e, int) else sorted(e) for e in exclude]
    if len(rows) != batch:
        raise ValueError(f"exclude has {len(rows)} rows for {batch} queries")
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long, device=device).view(batch, width)


def excluded_mask(excl: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """(B, n) True where a row's exclusions fall in blocks start..start+n-1; no host-device sync."""
    local = excl - start  # (B, E)
    inside = (excl >= 0) & (local >= 0) & (local < n)
    mask = torch.zeros((len(excl), n + 1), dtype=torch.bool, device=excl.device)  # column n: exclusions elsewhere
    return mask.scatter_(1, torch.where(inside, local, n), True)[:, :n]


class MipsIndex:
    """Top-k search of f(x, z) = q^T z over a fixed (N, D) matrix of document embeddings."""

    def __init__(self, embeddings: torch.Tensor, backend: str = "exact", version: str = "", chunk: int | None = None,
                 nprobe: int = 16):
        if backend not in BACKENDS:
            raise ValueError(f"unknown MIPS backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if embeddings.dim() != 2 or len(embeddings) == 0:
            raise ValueError(f"an index needs a non-empty (N, D) matrix, got shape {tuple(embeddings.shape)}")
        self.embeddings = embeddings.detach().float()  # (N, D)
        self.backend, self.version, self.chunk = backend, version, chunk
        self.max_k = None  # the most neighbours the FAISS index returns; more are searched exactly
        self._faiss_index = self._build_faiss(nprobe) if backend != "exact" else None

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def _build_faiss(self, nprobe: int):
        faiss = _faiss()
        x = self.embeddings.cpu().numpy()
        n, d = x.shape
        if self.backend == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.backend == "ivf":
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # FAISS wants >= 39 points per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = min(nprobe, nlist)
        else:
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
        if self.embeddings.is_cuda and hasattr(faiss, "StandardGpuResources") and self.backend != "hnsw":
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, self.embeddings.device.index or 0, index)
            self.max_k = GPU_MAX_K
        index.add(x)
        return index

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best blocks per query, never one in `exclude` (trivial retrieval), never -1: (B, k), (B, k)."""
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries of shape {tuple(queries.shape)} do not match index dimension {self.dim}")
        b = len(queries)
        excl = None if exclude is None else exclusion_tensor(exclude, b, self.embeddings.device)  # (B, E), pad -1
        n_excluded = 0 if excl is None else excl.shape[1]  # the most any row excludes (no wait for a GPU)
        if k > len(self) - n_excluded:
            raise ValueError(f"k={k} exceeds the {len(self) - n_excluded} blocks left after exclusion")
        q = queries.detach().float().to(self.embeddings.device)
        if self._faiss_index is None or (self.max_k is not None and k + n_excluded > self.max_k):
            return self._search_exact(q, k, excl)  # exact: also for more neighbours than a GPU index returns
        return self._search_faiss(q, k, excl)

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Embed_doc(z) of blocks `ids` as the index holds them: (B, n) -> (B, n, D)."""
        return self.embeddings[ids.to(self.embeddings.device)]

    def _search_exact(self, q, k, excl):
        # chunk: blocks scored at a time; by default as many as keep the (B, chunk) scores within 2^26 floats (256 MiB)
        chunk = self.chunk or max(65536, 2 ** 26 // max(1, len(q)))
        if len(self) <= chunk:  # one product and one top-k: the common case, no merge
            s = q @ self.embeddings.T  # (B, N)
            if excl is not None and excl.shape[1]:
                s.masked_fill_(excluded_mask(excl, 0, len(self)), float("-inf"))
            return s.topk(k, dim=1)
        best_s = torch.full((len(q), 0), float("-inf"), device=q.device)
        best_i = torch.zeros((len(q), 0), dtype=torch.long, device=q.device)
        for start in range(0, len(self), chunk):  # chunked: the (B, N) score matrix never exists whole
            z = self.embeddings[start:start + chunk]  # (n, D)
            s = q @ z.T  # (B, n)
            if excl is not None and excl.shape[1]:
                s.masked_fill_(excluded_mask(excl, start, len(z)), float("-inf"))
            top_s, top_i = s.topk(min(k, len(z)), dim=1)
            best_s, order = torch.cat([best_s, top_s], 1).topk(min(k, best_s.shape[1] + top_s.shape[1]), dim=1)
            best_i = torch.cat([best_i, top_i + start], 1).gather(1, order)
        return best_s, best_i

    def _search_faiss(self, q, k, excl):
        """FAISS's top k + E, the excluded blocks and FAISS's padding (id -1) dropped; in numpy, whose calls on
        arrays this small cost a microsecond, so that the wrapper adds little to FAISS's own search."""
        e = 0 if excl is None else excl.shape[1]
        s, i = self._faiss_index.search(q.cpu().numpy(), k + e)  # (B, k + E); id -1: FAISS found fewer
        bad = i < 0
        if e:
            bad |= (i[:, :, None] == excl.cpu().numpy()[:, None, :]).any(2)  # (B, k + E)
        if e or bad.any():
            s = np.where(bad, -np.inf, s)
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
            # rows with fewer than k allowed blocks (IVF, HNSW) are completed by exact search: an id of -1 would
            # read as the null document ∅ in one place and as the last block (python's index -1) in another
            short = np.isinf(s).any(1).nonzero()[0]
            if len(short):
                rows = torch.from_numpy(short).to(q.device)
                es, ei = self._search_exact(q[rows], k, None if excl is None else excl[rows.to(excl.device)])
                s[short], i[short] = es.cpu().numpy(), ei.cpu().numpy()
        s, i = torch.from_numpy(np.ascontiguousarray(s[:, :k])), torch.from_numpy(np.ascontiguousarray(i[:, :k]))
        return s.to(q.device), i.to(q.device)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Embeddings, backend and document-encoder version in one file, written atomically."""
        import io

        buf = io.BytesIO()
        torch.save({"format": "realm-lite-index/1", "embeddings": self.embeddings.cpu(), "backend": self.backend,
                    "version": self.version}, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, expect_version: str | None = None, expect_size: int | None = None,
             device="cpu", backend: str | None = None) -> "MipsIndex":
        """Read an index; a corrupt file, or one built by another document encoder or corpus, is an error."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no index file at {path}")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a readable realm-lite index ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict) or d.get("format") != "realm-lite-index/1":
            raise ValueError(f"{path}: not a realm-lite index (format field missing or unknown)")
        if expect_version is not None and d["version"] != expect_version:
            raise ValueError(f"{path}: index built by document encoder {d['version']!r}, but the model is "
                             f"{expect_version!r}; rebuild the index")
        if expect_size is not None and len(d["embeddings"]) != expect_size:
            raise ValueError(f"{path}: index holds {len(d['embeddings'])} blocks, the corpus has {expect_size}")
        return cls(d["embeddings"].to(device), backend or d["backend"], d["version"])
