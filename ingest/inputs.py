"""What the activation, CircuitLens and scoring commands read: a corpus as token sequences,
the model and its transcoders. Text becomes tokens in one place, ``atlas.corpus``."""

from __future__ import annotations

import hashlib


def tokens_fingerprint(tokens) -> str:
    """A short hash of a token tensor: a job's units are done for one corpus only."""
    return hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()[:16]


def load_inputs(model_spec: str, transcoders: str, text: str, seq_len: int, max_sequences: int | None):
    """(model, transcoder set, tokens [n, seq_len]) for the command line. ``text`` is any corpus
    source of ``atlas.corpus`` (a file, a directory, ``builtin``, a dataset name), all of it used."""
    from atlas.config import CorpusConfig
    from atlas.corpus import Corpus, check_source
    from atlas.models import load_model
    from atlas.transcoders.loading import load_transcoders

    cfg = CorpusConfig(source=str(text), seq_len=seq_len, heldout_fraction=0.0)
    check_source(cfg)  # a missing, empty or corrupt corpus fails before the model loads
    model = load_model(model_spec)
    tset = load_transcoders(transcoders, model)
    n_tokens = None if max_sequences is None else max_sequences * seq_len
    return model, tset, Corpus.for_model(model, cfg).tokens("all", n_tokens)
