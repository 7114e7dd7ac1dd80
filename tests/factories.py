"""Factories for real parts at tiny size, in one module: random transcoders (in memory and as files in
each published format), text corpora and training configurations. tests/conftest.py wraps them as
fixtures; tests that build parts at import time or in a subprocess, and the benchmarks (bench/),
import them from here.

Every random transcoder comes from ``random_tensors`` (one draw order, scales from a ``RandomInit``)
and, in memory, from ``atlas.transcoders.build.build_layer``, the constructor every format loader
ends in, so a test transcoder is built exactly as a loaded one.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parent.parent

# ---- random transcoders ------------------------------------------------------------------------------

Kind = Literal["relu", "jumprelu", "skip", "jumprelu-skip"]


@dataclass(frozen=True)
class RandomInit:
    """Scales of a random transcoder's tensors: each entry is N(0, 1) * std (+ shift); threshold U(0, 1) * max.
    A tensor whose std (or max) is 0 is not drawn: it is constant (its shift, or 0). The default is
    sparse-ish (b_enc centred at -0.8): a few features fire per token, as CircuitLens needs."""

    W_enc: float = 0.4  # std of W_enc [d_in, d_sae]
    b_enc: float = 0.3  # std of b_enc [d_sae] ...
    b_enc_shift: float = -0.8  # ... around this mean
    W_dec: float = 0.1  # std of W_dec [d_sae, d_out]
    b_dec: float = 0.05  # std of b_dec [d_out]
    threshold: float = 0.5  # JumpReLU threshold [d_sae] uniform in [0, this)
    W_skip: float = 0.05  # std of W_skip [d_out, d_in]
    # the order in which the four dense tensors are drawn from the generator (threshold and W_skip
    # follow): part of the recipe, so that a seed names the same tensors as it did in the tests' history
    order: tuple[str, ...] = ("W_enc", "b_enc", "W_dec", "b_dec")

    @classmethod
    def fan_in(cls, d_model: int, **overrides) -> RandomInit:
        """W_enc and W_dec with std 1/sqrt(d_model), b_enc N(0, 0.1), no output bias, threshold 0
        (about half the features fire): the scale of the WeightLens tests, whose lens reads weights only."""
        unit = d_model**-0.5
        return replace(
            cls(
                W_enc=unit,
                b_enc=0.1,
                b_enc_shift=0.0,
                W_dec=unit,
                b_dec=0.0,
                threshold=0.0,
                order=("W_enc", "W_dec", "b_enc", "b_dec"),
            ),
            **overrides,
        )


FILE_INIT = RandomInit(W_enc=0.3, b_enc=0.2, b_enc_shift=0.0)  # the file-format tests: any finite values


def random_tensors(
    gen, d_in: int, d_sae: int, d_out: int, kind: Kind = "relu", init: RandomInit = RandomInit()
) -> dict:
    """A transcoder's tensors in SAELens layout, drawn from ``gen``: the four dense ones in ``init.order``,
    then threshold for JumpReLU, then W_skip for a skip kind."""
    import torch

    shapes = {
        "W_enc": (d_in, d_sae),
        "b_enc": (d_sae,),
        "W_dec": (d_sae, d_out),
        "b_dec": (d_out,),
        "threshold": (d_sae,),
        "W_skip": (d_out, d_in),
    }
    shifts = {"b_enc": init.b_enc_shift}
    wanted = [*init.order, *(["threshold"] if "jumprelu" in kind else []), *(["W_skip"] if "skip" in kind else [])]
    t = {}
    for key in wanted:
        scale, shift = getattr(init, key), shifts.get(key, 0.0)
        if scale == 0:
            t[key] = torch.full(shapes[key], float(shift))
        else:
            noise = torch.rand if key == "threshold" else torch.randn  # threshold >= 0
            t[key] = noise(shapes[key], generator=gen) * scale + shift
    # W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_out], b_dec [d_out], threshold [d_sae], W_skip [d_out, d_in]
    return {key: t[key] for key in shapes if key in t}


def random_transcoder_set(
    model,
    d_sae: int = 48,
    kind: Kind = "relu",
    seed: int = 0,
    layers=None,
    set_name: str = "test",
    init: RandomInit | Literal["fan_in"] | None = None,
    device: str = "cpu",
):
    """A TranscoderSet of random transcoders reading ln2.hook_normalized and writing hook_mlp_out of
    each layer of ``model`` (default: every layer), built by atlas.transcoders.build.build_layer.
    ``init``: a RandomInit, 'fan_in' (RandomInit.fan_in(d_model)) or None (RandomInit())."""
    import torch

    from atlas.transcoders.build import build_layer
    from atlas.transcoders.transcoder_set import TranscoderSet

    d = model.cfg.d_model
    init = RandomInit.fan_in(d) if init == "fan_in" else (init or RandomInit())
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for layer in range(model.cfg.n_layers) if layers is None else layers:
        tensors = random_tensors(gen, d, d_sae, d, kind, init)
        out[layer] = build_layer(
            f"random transcoder {layer}",
            layer,
            format="test",
            uri=f"memory:{set_name}/{layer}",
            device=device,
            **tensors,
        )
    return TranscoderSet(set_name, out)


# ---- transcoder files ----------------------------------------------------------------------------
# write_transcoder_set(fmt, root, ...) writes a real transcoder set in one of the published file
# formats, with known random tensors, for `tiny_model` (d_model 64) by default. It returns a
# WrittenTranscoders: .spec ('FORMAT:PATH', ready for atlas.transcoders.load_transcoders or the
# CLI), .path, and .tensors {layer: {key: tensor}} exactly as stored, in the format's own layout
# (Dunefsky: input bias b_dec + output bias b_dec_out; circuit-tracer: W_enc stored [F, d]).

TRANSCODER_FILE_FORMATS = ("saelens", "dunefsky", "gemmascope", "circuit-tracer")


class WrittenTranscoders:
    def __init__(self, fmt: str, path: Path, tensors: dict):
        self.format, self.path, self.tensors = fmt, path, tensors
        self.spec = f"{fmt}:{path}"


def _fake_sae_training_config(layer: int, d_in: int):
    """A config object of a class in a module (`sae_training.config`) that is removed from
    sys.modules again by the caller, as that module is absent on a user's machine."""
    import dataclasses
    import types

    import torch

    pkg, mod = types.ModuleType("sae_training"), types.ModuleType("sae_training.config")

    @dataclasses.dataclass
    class LanguageModelSAERunnerConfig:
        hook_point: str
        out_hook_point: str
        d_in: int
        dtype: object

    LanguageModelSAERunnerConfig.__module__ = mod.__name__
    LanguageModelSAERunnerConfig.__qualname__ = "LanguageModelSAERunnerConfig"
    mod.LanguageModelSAERunnerConfig = LanguageModelSAERunnerConfig
    pkg.config = mod
    sys.modules.update({"sae_training": pkg, "sae_training.config": mod})
    return LanguageModelSAERunnerConfig(
        f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out", d_in, torch.float32
    )


def write_transcoder_set(
    fmt: str,
    root: Path,
    layers=(0, 1),
    d_in: int = 64,
    d_sae: int = 96,
    d_out: int | None = None,
    jumprelu: bool | None = None,
    skip: bool = False,
    seed: int = 0,
) -> WrittenTranscoders:
    import torch

    from atlas.transcoders.writers import write_layer

    if fmt not in TRANSCODER_FILE_FORMATS:
        raise ValueError(f"unknown transcoder file format {fmt!r}")
    jumprelu = (fmt == "gemmascope") if jumprelu is None else jumprelu
    kind = ("jumprelu-skip" if skip else "jumprelu") if jumprelu else ("skip" if skip else "relu")
    gen = torch.Generator().manual_seed(seed)
    written = {}
    for layer in layers:
        t = random_tensors(gen, d_in, d_sae, d_out or d_in, kind, FILE_INIT)
        if fmt == "dunefsky":  # input-centering bias b_dec [d_in], output bias b_dec_out [d_out]
            t = {**t, "b_dec": torch.randn(d_in, generator=gen) * 0.5, "b_dec_out": t["b_dec"]}
            try:
                write_layer(fmt, root, layer, t, cfg=_fake_sae_training_config(layer, d_in))
            finally:
                del sys.modules["sae_training"], sys.modules["sae_training.config"]
        elif fmt == "circuit-tracer":  # W_enc stored [d_sae, d_in]
            t = {**t, "W_enc": t["W_enc"].T.contiguous()}
            write_layer(fmt, root, layer, t)
        else:
            write_layer(fmt, root, layer, t)
        written[layer] = t
    return WrittenTranscoders(fmt, Path(root), written)


# ---- demo: text files and tiny training configurations ------------------------------------------------

_WORDS = (
    "the a river city stone light king garden letter morning silver quiet old young north "
    "window road horse bread winter summer sister brother friend house ship song bird field "
    "walked saw found gave kept opened closed carried wrote read heard remembered"
).split()


def write_text_corpus(directory: Path, n_docs: int = 60, words_per_doc: int = 120, seed: int = 0) -> Path:
    """A directory with a .txt, a .jsonl and a .parquet file of deterministic pseudo-English documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        sentences = []
        for _ in range(words_per_doc // 8):
            words = [rng.choice(_WORDS) for _ in range(8)]
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(f"Document {d}. " + " ".join(sentences))
    directory.mkdir(parents=True, exist_ok=True)
    third = n_docs // 3
    (directory / "a.txt").write_text("\n\n".join(docs[:third]) + "\n")
    (directory / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[third : 2 * third]))
    pq.write_table(pa.table({"text": docs[2 * third :]}), directory / "c.parquet")
    return directory


def tiny_train_config(**overrides):
    """A TrainConfig for random:tiny that trains in seconds."""
    from atlas.config import TrainConfig

    base = dict(
        model="random:tiny",
        set_name="tiny-tc",
        layers=(0, 1),
        d_sae=128,
        k=8,
        n_tokens=4096,
        epochs=3,
        batch_size=128,
        lr=3e-3,
        aux_k=32,
        dead_after_tokens=1024,
        eval_tokens=1024,
        eval_loss_tokens=256,
        collect_batch=16,
    )
    return TrainConfig(**{**base, **overrides})


class JsonHandler(BaseHTTPRequestHandler):
    """What the loopback JSON servers of the tests share: the request body read as JSON, a reply
    written as JSON with its length, and no request log on stderr."""

    def read_json(self):
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def reply_json(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass
