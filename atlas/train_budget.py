"""Will a transcoder build fit in memory? Estimated before anything is collected, so a build that cannot
fit is refused with a clear error instead of dying half-way.

1. Activations held in memory by atlas/train.py: x and y (float32, d_model each) of every layer to
   train, for the training and held-out tokens: L * (n_tokens + eval_tokens) * 2 * d_model * 4 bytes.
2. Batched training state: per layer W_enc, W_dec (d_model * d_sae each), as parameters, gradients and
   Adam's two moments (x4); per step z, f, the AuxK tensors and their gradients (~8 [batch, d_sae]).
3. Compare with the memory the OS says is available (MemAvailable), keeping a 20 % margin.
"""

from __future__ import annotations

from typing import NamedTuple

from atlas.config import TrainConfig
from atlas.errors import TranscoderError


class MemoryPlan(NamedTuple):
    activations_bytes: int
    training_bytes: int
    available_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return self.activations_bytes + self.training_bytes


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def plan(cfg: TrainConfig, n_layers: int, d_model: int, available: int | None = None) -> MemoryPlan:
    acts = n_layers * (cfg.n_tokens + cfg.eval_tokens) * 2 * d_model * 4  # 1.
    train = n_layers * (4 * 2 * d_model * cfg.d_sae * 4 + 8 * cfg.batch_size * cfg.d_sae * 4)  # 2.
    return MemoryPlan(acts, train, available if available is not None else available_memory())


def check(cfg: TrainConfig, n_layers: int, d_model: int, available: int | None = None) -> MemoryPlan:
    """The plan, or TranscoderError when it needs more than 80 % of the available memory."""
    p = plan(cfg, n_layers, d_model, available)
    if p.available_bytes is not None and p.total_bytes > 0.8 * p.available_bytes:
        gib = 2**30
        raise TranscoderError(
            f"training {n_layers} layers at width {cfg.d_sae} on {cfg.n_tokens:,} tokens needs about "
            f"{p.total_bytes / gib:.1f} GiB ({p.activations_bytes / gib:.1f} GiB of activations, "
            f"{p.training_bytes / gib:.1f} GiB of training state); {p.available_bytes / gib:.1f} GiB is available. "
            f"Use fewer --layers, a smaller --width or fewer --tokens"
        )
    return p
