"""ENTER: text -> fixed-length token sequences, streamed, with a deterministic held-out split.

1. Documents come from one source: ``builtin`` (the public-domain Debian corpus that
   ``atlas assets`` builds), local files (``.txt``: one document per blank-line-separated block;
   ``.jsonl``: one per line, its ``text_field``; ``.parquet``: the ``text_field`` column), a
   directory of such files, or a Hugging Face dataset name (streamed; needs a network).
2. Split: a document is held out when the first 8 bytes of sha256(text), as a fraction of 2^64,
   fall below ``heldout_fraction``; the same text always lands on the same side, whatever the
   source order.
3. Packing: the split's documents are tokenized (no special tokens), joined with a blank line and
   cut into sequences of ``seq_len - 1`` tokens, each prefixed with the model's BOS token, so
   every sequence starts like the model's training text. A trailing short piece is dropped.
4. ``batches`` stacks sequences into [batch, seq_len] tensors; ``n_tokens`` caps the stream.
An empty split raises AssetError naming the source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from atlas.config import CorpusConfig
from atlas.errors import AssetError

if TYPE_CHECKING:
    import torch

Split = Literal["train", "heldout", "all"]
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")


def heldout(text: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8", errors="replace")).digest()[:8], "big")
    return h / 2**64 < fraction


class Corpus:
    def __init__(self, tokenizer, bos_token_id: int, cfg: CorpusConfig = CorpusConfig()):
        self.tokenizer, self.bos, self.cfg = tokenizer, int(bos_token_id), cfg
        if cfg.seq_len < 2:
            raise AssetError(f"seq_len must be at least 2 (BOS + one token), not {cfg.seq_len}")

    @classmethod
    def for_model(cls, model, cfg: CorpusConfig = CorpusConfig()) -> Corpus:
        from atlas.models import bos_token_id

        if model.tokenizer is None:
            raise AssetError("the model has no tokenizer; a corpus needs one to tokenize text")
        return cls(model.tokenizer, bos_token_id(model), cfg)

    # -- 1. documents

    def documents(self, split: Split = "all") -> Iterator[str]:
        for text in _source_documents(self.cfg):
            if not text or not text.strip():
                continue
            if split == "all" or heldout(text, self.cfg.heldout_fraction) == (split == "heldout"):
                yield text

    # -- 3. packing

    def sequences(self, split: Split = "train", n_tokens: int | None = None) -> Iterator[list[int]]:
        """[BOS] + seq_len - 1 tokens per sequence, until ``n_tokens`` tokens (BOS included) are given."""
        body = self.cfg.seq_len - 1
        buffer: list[int] = []
        given = 0
        sep = self.tokenizer.encode("\n\n", add_special_tokens=False)
        for text in self.documents(split):
            buffer += self.tokenizer.encode(text, add_special_tokens=False) + sep
            while len(buffer) >= body:
                if n_tokens is not None and given + self.cfg.seq_len > n_tokens:
                    return
                yield [self.bos] + buffer[:body]
                buffer = buffer[body:]
                given += self.cfg.seq_len
        if given == 0:
            which = "" if split == "all" else f"{split} "
            raise AssetError(
                f"the corpus {self.cfg.source!r} has no {which}text of at least {self.cfg.seq_len} tokens; "
                "give it more text (or a smaller seq_len / heldout_fraction)"
            )

    def batches(
        self, split: Split = "train", batch_size: int = 16, n_tokens: int | None = None
    ) -> Iterator[torch.Tensor]:
        """[batch, seq_len] int64 tensors; the last batch may be smaller."""
        import torch

        rows: list[list[int]] = []
        for seq in self.sequences(split, n_tokens):
            rows.append(seq)
            if len(rows) == batch_size:
                yield torch.tensor(rows, dtype=torch.long)
                rows = []
        if rows:
            yield torch.tensor(rows, dtype=torch.long)

    def tokens(self, split: Split = "train", n_tokens: int | None = 8192) -> torch.Tensor:
        """All sequences up to ``n_tokens`` (None: the whole split) as one [n_seq, seq_len] tensor."""
        import torch

        return torch.cat(list(self.batches(split, 64, n_tokens)))


# ---- 1. sources ----------------------------------------------------------------------------------


def check_source(cfg: CorpusConfig) -> None:
    """Read up to the first document: a missing, empty or malformed source fails here, before a
    command loads a model (a malformed line further on still fails when it is reached)."""
    if not any(text.strip() for text in _source_documents(cfg)):
        raise AssetError(f"the corpus {cfg.source!r} holds no text")


def _source_documents(cfg: CorpusConfig) -> Iterator[str]:
    source = cfg.source
    if source == "builtin":
        from atlas.assets import FIX, corpus_path

        path = corpus_path()
        if not path.is_file():
            raise AssetError(f"the built-in corpus is not in the cache ({path}): {FIX}")
        yield from _parquet(path, "text")
        return
    path = Path(source)
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise AssetError(f"no {', '.join(TEXT_SUFFIXES)} files in {path}")
        for f in files:
            yield from _file_documents(f, cfg.text_field)
        return
    if source.endswith(TEXT_SUFFIXES) or source.startswith(("/", ".", "~")):
        raise AssetError(f"no corpus file or directory at {source!r}")
    yield from _hf_documents(cfg)


def _file_documents(path: Path, field: str) -> Iterator[str]:
    if path.suffix == ".txt":
        text = path.read_text(encoding="utf-8", errors="replace")
        for block in text.replace("\r\n", "\n").split("\n\n"):
            if block.strip():
                yield block.strip("\n")
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AssetError(f"{path}:{n} is not JSON: {exc}") from exc
                if not isinstance(row, dict) or field not in row:
                    raise AssetError(f"{path}:{n} has no {field!r} field (set the corpus text_field)")
                yield str(row[field])
    elif path.suffix == ".parquet":
        yield from _parquet(path, field)
    else:
        raise AssetError(f"{path}: unknown corpus file type (use {', '.join(TEXT_SUFFIXES)})")


def _parquet(path: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise AssetError(f"{path} is not a readable parquet file: {exc}") from exc
    if field not in pf.schema_arrow.names:
        raise AssetError(f"{path} has no column {field!r} (columns: {', '.join(pf.schema_arrow.names)})")
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if t)


def _hf_documents(cfg: CorpusConfig) -> Iterator[str]:
    """A Hugging Face dataset, streamed (online only)."""
    try:
        import datasets

        stream = datasets.load_dataset(cfg.source, split=cfg.hf_split, streaming=True)
        first = True
        for row in stream:
            if first and cfg.text_field not in row:
                raise AssetError(f"dataset {cfg.source!r} has no {cfg.text_field!r} column (columns: {', '.join(row)})")
            first = False
            yield str(row[cfg.text_field])
    except AssetError:
        raise
    except Exception as exc:
        raise AssetError(
            f"{cfg.source!r} is not a local file or directory, and could not be streamed as a Hugging Face "
            f"dataset ({type(exc).__name__}: {str(exc)[:200]}); "
            "give a path, 'builtin', or a dataset name with a network"
        ) from exc
