"""What the activation and CircuitLens jobs read: corpus tokens, model and source rows.

``text_tokens`` is the one place these jobs turn text into token sequences; when ``atlas.corpus``
lands it should delegate there. Format: ``.txt`` (the whole file is one document) or ``.jsonl``
(one JSON object per line with a ``text`` field). Documents are joined with BOS, cut into
sequences of ``seq_len - 1`` tokens, and each sequence starts with BOS.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from atlas.errors import AssetError


def read_documents(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"no text file at {path}")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AssetError(f"{path} is not UTF-8 text: {exc}") from exc
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise AssetError(f"{path} line {n} is not a JSON object with a 'text' field: {exc}") from exc
    else:
        docs = [raw]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise AssetError(f"{path} holds no text")
    return docs


def text_tokens(path: str | Path, model, seq_len: int, max_sequences: int | None = None):
    """Token sequences [n, seq_len] (int64) from a text file, with the model's tokenizer."""
    import torch

    from atlas.models import bos_token_id

    if model.tokenizer is None:
        raise AssetError("the model has no tokenizer: pass token ids instead of text")
    bos = bos_token_id(model)
    ids: list[int] = []
    for doc in read_documents(path):
        ids.append(bos)
        ids += model.tokenizer(doc, add_special_tokens=False)["input_ids"]
    step = seq_len - 1
    n = len(ids) // step
    if max_sequences is not None:
        n = min(n, max_sequences)
    if n == 0:
        raise AssetError(f"{path} has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    body = torch.tensor(ids[: n * step], dtype=torch.long).view(n, step)
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), body], 1)


def tokens_fingerprint(tokens) -> str:
    """A short hash of a token tensor: a job's units are done for one corpus only."""
    return hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()[:16]


def load_inputs(model_spec: str, transcoders: str, text: str, seq_len: int, max_sequences: int | None):
    """(model, transcoder set, tokens [n, seq_len]) for the command line."""
    from atlas.models import load_model
    from atlas.transcoders.loading import load_transcoders

    read_documents(text)  # a missing, empty or corrupt corpus fails before the model loads
    model = load_model(model_spec)
    tset = load_transcoders(transcoders, model)
    return model, tset, text_tokens(text, model, seq_len, max_sequences)
