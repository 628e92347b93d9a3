#!/usr/bin/env python3
"""Download the official open-domain QA data sets and the DPR Wikipedia blocks.

Usage:
    python data/download.py --list
    python data/download.py [--out data/raw] NAME [NAME ...]
    python data/download.py all

Each NAME is one entry of DATASETS below; its files go to OUT/NAME/.

Standard library only. Every file is streamed to FILE.part and renamed to FILE
once complete, so an interrupted run never leaves a file that looks finished.
Where a checksum was published somewhere public, it is recorded next to the URL
together with where it was published, and a mismatch is an error that deletes
the download. Where none was found, the checksum field is None, and the script
prints the sha256 it computed and says that it could not verify it.

A file that is already there with the published checksum is skipped. A file
that is already there and has no published checksum is also skipped (there is
nothing to check it against); use --force to fetch it again.

Exit status: 0 on success, 1 when a download failed (HTTP error, checksum or
size mismatch), 2 when the machine seems to be offline, or for bad arguments.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import http.client
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple, Optional

DEFAULT_OUT = Path(__file__).resolve().parent / "raw"
CHUNK = 1 << 20  # 1 MiB
TIMEOUT_S = 60


class RemoteFile(NamedTuple):
    url: str
    filename: str
    size: Optional[int] = None  # bytes, when published
    sha256: Optional[str] = None  # when published
    md5: Optional[str] = None  # when published
    source: str = ""  # where the size/checksums were published


class Dataset(NamedTuple):
    description: str
    fmt: str
    files: tuple


# URLs: SQuAD and WebQuestions (SEMPRE) as in facebookresearch/DrQA download.sh; DPR files as
# in facebookresearch/DPR dpr/data/download_data.py; CuratedTrec.tar.gz from the DrQA README;
# NQ-open from google-research-datasets/natural-questions nq_open/README.md.
# Published sizes/checksums, and the public files they were read from (the `source` field):
#   SQuAD v1.1      size, sha256: tensorflow/datasets tensorflow_datasets/url_checksums/squad.txt
#                   md5: pytorch/text torchtext/datasets/squad1.py; ParlAI parlai/tasks/squad/build.py
#   NQ-open         size, sha256: tensorflow/datasets .../url_checksums/natural_questions_open.txt
#                   and huggingface/datasets datasets/nq_open/dataset_infos.json
#   WebQuestions    size, sha256: tensorflow/datasets .../url_checksums/web_questions.txt
#                   and huggingface/datasets datasets/web_questions/dataset_infos.json
#   psgs_w100       size, sha256: huggingface/datasets datasets/wiki_dpr/dataset_infos.json
# No published checksum was found for the other files: they are recorded as None.
# NQ-open: pinned to the commit whose files TFDS checksummed.
_NQ = "https://raw.githubusercontent.com/google-research-datasets/natural-questions"
_NQ_PIN = "a7a113c9fdc2d9986d624bd43b8a18d6d5779eaa"
_NQ_TEST_PIN = "fb26a3073b1fe636c97302890a27b491d6530130"  # has NQ-open.efficientqa.test.1.1.jsonl
_SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset"
_CODALAB = "https://worksheets.codalab.org/rest/bundles"
_SEMPRE = ("http://nlp.stanford.edu/static/software/sempre/release-emnlp2013/"
           "lib/data/webquestions/dataset_11")
_BRMSON = "https://raw.githubusercontent.com/brmson"
_TFDS_SQUAD = ("tensorflow/datasets tensorflow_datasets/url_checksums/squad.txt (size, sha256); "
               "pytorch/text torchtext/datasets/squad1.py and facebookresearch/ParlAI "
               "parlai/tasks/squad/build.py (md5)")
_NQ_SRC = ("tensorflow/datasets tensorflow_datasets/url_checksums/natural_questions_open.txt; "
           "huggingface/datasets datasets/nq_open/dataset_infos.json")
_WQ_SRC = ("tensorflow/datasets tensorflow_datasets/url_checksums/web_questions.txt; "
           "huggingface/datasets datasets/web_questions/dataset_infos.json")
_DPR_SRC = "huggingface/datasets datasets/wiki_dpr/dataset_infos.json (download_checksums)"

DATASETS = {
    "squad": Dataset(
        "SQuAD v1.1 train and dev (Rajpurkar et al. 2016), CC BY-SA 4.0",
        "SQuAD v1.1 JSON",
        (
            RemoteFile(f"{_SQUAD}/train-v1.1.json", "train-v1.1.json", 30_288_272,
                       "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
                       "981b29407e0affa3b1b156f72073b945", _TFDS_SQUAD),
            RemoteFile(f"{_SQUAD}/dev-v1.1.json", "dev-v1.1.json", 4_854_279,
                       "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
                       "3e85deb501d4e538b6bc56f786231552", _TFDS_SQUAD),
        ),
    ),
    "nq-open": Dataset(
        "NQ-open (Lee et al. 2019) train/dev + EfficientQA test 1.1, CC BY-SA 3.0",
        'JSONL {"question", "answer": [...]}',
        (
            RemoteFile(f"{_NQ}/{_NQ_PIN}/nq_open/NQ-open.train.jsonl", "NQ-open.train.jsonl",
                       8_522_298,
                       "0c93aaf13b12f855628489665e4ef85ffb8573ad444646f11f4fabdc57a0aabf",
                       None, _NQ_SRC),
            RemoteFile(f"{_NQ}/{_NQ_PIN}/nq_open/NQ-open.dev.jsonl", "NQ-open.dev.jsonl",
                       391_316,
                       "f15567f38099f3615f5b8a685c0aef449c11ad90d3da3735e8d1b98115b40616",
                       None, _NQ_SRC),
            RemoteFile(f"{_NQ}/{_NQ_TEST_PIN}/nq_open/NQ-open.efficientqa.test.1.1.jsonl",
                       "NQ-open.efficientqa.test.1.1.jsonl"),
        ),
    ),
    "webquestions": Dataset(
        "WebQuestions (Berant et al. 2013), original JSON from the authors' CodaLab worksheet",
        'JSON list of {"url", "targetValue", "utterance"}',
        (
            RemoteFile(f"{_CODALAB}/0x4a763f8cde224c2da592b75f29e2f5c2/contents/blob/",
                       "webquestions.examples.train.json", 825_320,
                       "fb1797e4554a1b1be642388367de1379f8c0d5afc609ac171492c67f7b70cb1e",
                       None, _WQ_SRC),
            RemoteFile(f"{_CODALAB}/0xe7bac352fce7448c9ef238fb0a297ec2/contents/blob/",
                       "webquestions.examples.test.json", 447_645,
                       "e3d4550e90660aaabe18458ba34b59f2624857273f375af7353273ce8b84ce6e",
                       None, _WQ_SRC),
        ),
    ),
    "webquestions-sempre": Dataset(
        "WebQuestions, the same JSON bz2-compressed in the SEMPRE release (URLs from DrQA download.sh)",
        "bz2 of the original WebQuestions JSON (use --decompress)",
        (
            RemoteFile(f"{_SEMPRE}/webquestions.examples.train.json.bz2",
                       "webquestions.examples.train.json.bz2"),
            RemoteFile(f"{_SEMPRE}/webquestions.examples.test.json.bz2",
                       "webquestions.examples.test.json.bz2"),
        ),
    ),
    "webquestions-brmson": Dataset(
        "WebQuestions re-split by brmson/dataset-factoid-webquestions (main/), CC BY 4.0",
        'JSON list of {"qId", "qText", "answers": [...]}',
        tuple(
            RemoteFile(f"{_BRMSON}/dataset-factoid-webquestions/master/main/{split}.json",
                       f"{split}.json")
            for split in ("trainmodel", "val", "devtest", "test")
        ),
    ),
    "curatedtrec": Dataset(
        "CuratedTREC large2180 split (brmson/dataset-factoid-curated), as used by DrQA/ORQA/REALM",
        "TSV id<TAB>type<TAB>question<TAB>answer-regex",
        tuple(
            RemoteFile(f"{_BRMSON}/dataset-factoid-curated/master/large2180-{split}.tsv",
                       f"large2180-{split}.tsv")
            for split in ("train", "test")
        ),
    ),
    "curatedtrec-drqa": Dataset(
        "CuratedTREC train/test as rehosted by DrQA",
        'tar.gz of JSON lines {"question", "answer": [regex, ...]}',
        (RemoteFile("https://dl.fbaipublicfiles.com/drqa/CuratedTrec.tar.gz",
                    "CuratedTrec.tar.gz"),),
    ),
    "curatedtrec-dpr": Dataset(
        "CuratedTREC test as used by DPR",
        "TSV question<TAB>python-list-of-regexes, no header",
        (RemoteFile("https://dl.fbaipublicfiles.com/dpr/data/retriever/curatedtrec-test.qa.csv",
                    "curatedtrec-test.qa.csv"),),
    ),
    "dpr-wiki": Dataset(
        "DPR Wikipedia (Dec. 2018) split into 21M 100-word blocks (Karpukhin et al. 2020)",
        "gzipped TSV id<TAB>text<TAB>title with a header line (use --decompress)",
        (RemoteFile("https://dl.fbaipublicfiles.com/dpr/wikipedia_split/psgs_w100.tsv.gz",
                    "psgs_w100.tsv.gz", 4_694_541_059,
                    "c39b020c855a2b5c25ffef3abe4a3b6f9b829ad7dbc14ec3d163d34d7c53ea8d",
                    None, _DPR_SRC),),
    ),
}


class DownloadError(Exception):
    """A download failed; exit status 1."""


class ChecksumError(DownloadError):
    """The bytes received differ from the published size or checksum."""


class OfflineError(Exception):
    """The host could not be reached at all; exit status 2."""


def human(n: Optional[float]) -> str:
    if n is None:
        return "size unknown"
    if n < 1000:
        return f"{n:,} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"


def file_digests(path: Path) -> tuple:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def check(spec: RemoteFile, size: int, sha256: str, md5: str) -> Optional[str]:
    """Return a description of the first mismatch with the published values, else None."""
    if spec.size is not None and size != spec.size:
        return f"size {size:,} bytes, expected {spec.size:,}"
    if spec.sha256 is not None and sha256 != spec.sha256:
        return f"sha256 {sha256}, expected {spec.sha256}"
    if spec.md5 is not None and md5 != spec.md5:
        return f"md5 {md5}, expected {spec.md5}"
    return None


def is_verifiable(spec: RemoteFile) -> bool:
    return spec.sha256 is not None or spec.md5 is not None


def fetch(spec: RemoteFile, dest: Path) -> tuple:
    """Stream spec.url into dest + '.part', then rename. Returns (size, sha256, md5)."""
    part = dest.with_name(dest.name + ".part")
    sha, md5, done = hashlib.sha256(), hashlib.md5(), 0
    request = urllib.request.Request(spec.url, headers={"User-Agent": "realm-lite-download/1"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = spec.size or int(response.headers.get("Content-Length") or 0) or None
            next_report = 0.1
            with open(part, "wb") as out:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    sha.update(block)
                    md5.update(block)
                    done += len(block)
                    if total and done / total >= next_report:
                        print(f"    {done / total:4.0%}  {human(done)} of {human(total)}", flush=True)
                        next_report = int(done / total * 10 + 1) / 10
                    elif not total and done % (50 * CHUNK) < len(block):
                        print(f"    {human(done)}", flush=True)
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{spec.url} answered HTTP {e.code} {e.reason}") from None
    except http.client.HTTPException as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"the connection to {spec.url} broke off ({e!r}); try again") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise OfflineError(
            f"could not reach {spec.url} ({reason}).\n"
            "This machine seems to be offline, or the host is unreachable. "
            "Nothing was written; run again when you have internet access."
        ) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    size, sha_hex, md5_hex = done, sha.hexdigest(), md5.hexdigest()
    problem = check(spec, size, sha_hex, md5_hex)
    if problem:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {spec.url}: got {problem} "
            f"(published in {spec.source}). The download was deleted."
        )
    os.replace(part, dest)
    return size, sha_hex, md5_hex


def download_file(spec: RemoteFile, out_dir: Path, force: bool = False) -> Path:
    """Make sure out_dir/spec.filename is present (and verified where possible)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / spec.filename
    if dest.exists() and not force:
        if not is_verifiable(spec):
            print(f"  {dest}: already there, skipped (no published checksum; --force re-downloads)")
            return dest
        sha_hex, md5_hex = file_digests(dest)
        problem = check(spec, dest.stat().st_size, sha_hex, md5_hex)
        if problem is None:
            print(f"  {dest}: already there, checksum OK, skipped")
            return dest
        print(f"  {dest}: already there but {problem}; downloading again")
    print(f"  {spec.url}\n    -> {dest} ({human(spec.size)})", flush=True)
    size, sha_hex, md5_hex = fetch(spec, dest)
    if is_verifiable(spec):
        print(f"    OK: {size:,} bytes, checksum matches the published value ({spec.source})")
    else:
        print(f"    done: {size:,} bytes, sha256 {sha_hex}\n"
              "    NOT VERIFIED: no published checksum was found for this file")
    return dest


def decompress(path: Path) -> Optional[Path]:
    """Write the .gz/.bz2 file's content next to it (atomically). Returns the new path."""
    openers = {".gz": gzip.open, ".bz2": bz2.open}
    opener = openers.get(path.suffix)
    if opener is None or path.name.endswith(".tar.gz"):
        return None
    target = path.with_suffix("")
    if target.exists():
        print(f"  {target}: already decompressed, skipped")
        return target
    part = target.with_name(target.name + ".part")
    print(f"  decompressing {path.name} -> {target.name}", flush=True)
    try:
        with opener(path, "rb") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target


def list_datasets() -> None:
    print("Datasets (python data/download.py NAME ... | all):\n")
    for name, ds in DATASETS.items():
        known = [f.size for f in ds.files if f.size is not None]
        total = human(sum(known)) if len(known) == len(ds.files) else (
            f"at least {human(sum(known))}" if known else "size not published")
        verified = sum(is_verifiable(f) for f in ds.files)
        print(f"{name}\n    {ds.description}\n    format: {ds.fmt}\n"
              f"    {len(ds.files)} file(s), {total}; "
              f"{verified} of {len(ds.files)} with a published checksum")
        for f in ds.files:
            print(f"      {f.filename:40s} {human(f.size)}")
        print()


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="download.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="datasets: " + ", ".join(DATASETS) + ", or all")
    parser.add_argument("names", nargs="*", metavar="NAME", help="datasets to fetch, or 'all'")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: data/raw next to this script)")
    parser.add_argument("--list", action="store_true", help="list the datasets and exit")
    parser.add_argument("--force", action="store_true", help="download even if the file exists")
    parser.add_argument("--decompress", action="store_true",
                        help="also write the uncompressed copy of .gz and .bz2 files")
    args = parser.parse_args(argv)
    if args.list:
        return args
    if not args.names:
        parser.error("name at least one dataset (or 'all'); valid: " + ", ".join(DATASETS))
    unknown = [n for n in args.names if n != "all" and n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(unknown)}; "
                     f"valid names: {', '.join(DATASETS)}, all")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        list_datasets()
        return 0
    names = list(DATASETS) if "all" in args.names else list(dict.fromkeys(args.names))
    try:
        for name in names:
            print(f"[{name}] {DATASETS[name].description}")
            for spec in DATASETS[name].files:
                path = download_file(spec, args.out / name, force=args.force)
                if args.decompress:
                    decompress(path)
    except OfflineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; partial downloads were deleted", file=sys.stderr)
        return 130
    print("all done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
