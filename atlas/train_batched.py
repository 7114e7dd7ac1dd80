"""Train the transcoders of many layers together: the BatchTopK trainer of atlas/train.py, batched across layers.

The layers' parameters are stacked ([n_layers, ...]) and one Adam step updates all of them; the loss is
the sum of the layers' losses, and as no parameter is shared, each layer's gradient is the one the
single-layer trainer (``atlas.train.train_layer``) computes. With the same data, seed and batch order
the two trainers do the same arithmetic up to float rounding of ``bmm`` against ``mm`` (tested).

1. Normalize each layer's (x, y) as the single-layer trainer does (``atlas.train.normalization``);
   every layer starts from the same seeded weights (``atlas.train._init_weights``) and sees the same
   token order (one permutation per epoch: all layers share the tokens).
2. Per step, for a batch of token indices: xn [L, batch, d_in], yn [L, batch, d_out];
   z = xn @ W_enc + b_enc [L, batch, d_sae]; BatchTopK keeps the k * batch largest ReLU(z) of each layer;
   y_hat = f @ W_dec + b_dec; loss_l = normalized MSE + aux_coeff * AuxK loss of layer l's dead features.
   Optionally the matmuls run under bf16 autocast (``TrainConfig.bf16``; for CPUs with bf16 units).
3. Unit-norm decoder rows, running threshold per layer, checkpoint every ``CHECKPOINT_EVERY`` steps
   (resume gives the same weights: the batch order is fixed by the seed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.config import TrainConfig
from atlas.train import CheckpointState

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch


@dataclass
class LayerWeights:
    """One layer's trained weights in normalized units: what ``atlas.train.to_saelens`` folds into model units."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_out]
    b_dec: torch.Tensor  # [d_out]
    threshold: float  # theta


@dataclass
class BatchedResult:
    layers: list[int]
    weights: dict[int, LayerWeights]
    norms: dict[int, tuple]  # layer -> (mx, sx, sy)
    stats: dict[int, dict]  # layer -> training statistics (as train_layer's)


def _batch_topk(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, keep the k * batch largest ReLU(z): z [L, batch, d_sae] -> (f, smallest kept > 0 [L])."""
    import torch

    acts = torch.relu(z)
    n_layers = z.shape[0]
    flat = acts.reshape(n_layers, -1)  # [L, batch * d_sae]
    n_keep = min(k * z.shape[1], flat.shape[1])
    values, idx = flat.topk(n_keep, dim=-1, sorted=False)  # [L, n_keep]
    f = torch.zeros_like(flat).scatter_(1, idx, values).view_as(acts)
    big = torch.where(values > 0, values, torch.full_like(values, float("inf")))
    kept_min = big.min(-1).values
    return f, torch.where(torch.isinf(kept_min), torch.zeros_like(kept_min), kept_min)


class BatchedTrainer(CheckpointState):
    """The BatchTopK training state of L layers (normalized units), parameters stacked on dim 0."""

    threshold: torch.Tensor  # [L] theta per layer

    def __init__(self, cfg: TrainConfig, n_layers: int, d_in: int, d_out: int, y_means: torch.Tensor):
        import torch

        from atlas.train import _init_weights

        W_enc, W_dec = _init_weights(cfg, d_in, d_out)
        self.W_enc = W_enc.expand(n_layers, -1, -1).clone().requires_grad_()  # [L, d_in, d_sae]
        self.b_enc = torch.zeros(n_layers, 1, cfg.d_sae, requires_grad=True)  # [L, 1, d_sae]
        self.W_dec = W_dec.expand(n_layers, -1, -1).clone().requires_grad_()  # [L, d_sae, d_out]
        self.b_dec = y_means.reshape(n_layers, 1, d_out).clone().requires_grad_()  # [L, 1, d_out]
        self.params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.9, 0.999))
        self.since_fired = torch.zeros(n_layers, cfg.d_sae)  # [L, d_sae]
        self.threshold = torch.zeros(n_layers)  # [L]
        self.step = 0

    def train_step(self, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        """One Adam step on x [L, batch, d_in], y [L, batch, d_out]; returns each layer's normalized MSE [L]."""
        import contextlib

        import torch

        for group in self.opt.param_groups:
            group["lr"] = lr
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        with cast:
            z = torch.baddbmm(self.b_enc, x, self.W_enc).float()  # [L, batch, d_sae]
        f, kept_min = _batch_topk(z, cfg.k)
        with cast:
            y_hat = torch.baddbmm(self.b_dec, f, self.W_dec).float()  # [L, batch, d_out]
        denom = (y - y.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1)  # [L]
        mse = (y_hat - y).pow(2).sum(-1).mean(-1) / denom  # [L]
        loss = mse.sum()
        fired = (f > 0).any(1)  # [L, d_sae]
        self.since_fired = torch.where(fired, 0.0, self.since_fired + x.shape[1])
        dead = self.since_fired >= cfg.dead_after_tokens  # [L, d_sae]
        if dead.any():  # AuxK per layer; layers without dead features contribute no gradient
            k_aux = min(cfg.aux_k, int(dead.sum(-1).max()))
            z_dead = torch.where(dead[:, None, :], torch.relu(z), torch.zeros_like(z))
            values, idx = z_dead.topk(k_aux, dim=-1)  # [L, batch, k_aux]
            f_aux = torch.zeros_like(z).scatter_(-1, idx, values)
            residual = (y - y_hat).detach()
            with cast:
                rec = torch.bmm(f_aux, self.W_dec).float()
            aux = (rec - residual).pow(2).sum(-1).mean(-1) / residual.pow(2).sum(-1).mean(-1).clamp(min=1e-9)
            loss = loss + cfg.aux_coeff * (aux * dead.any(-1)).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        kept_min = kept_min.detach()
        self.threshold = 0.99 * self.threshold + 0.01 * kept_min if self.step else kept_min.clone()
        self.step += 1
        return mse.detach()


def _layer_results(
    cfg: TrainConfig,
    trainer: BatchedTrainer,
    layers: list[int],
    norms: dict,
    tail,
    n: int,
    d_out: int,
    total: int,
    seconds: float,
) -> BatchedResult:
    """Each layer's weights and training statistics after ``total`` steps on ``n`` tokens in ``seconds``;
    ``tail`` [L]: the mean loss of the last tenth of the steps."""
    import torch

    weights, stats = {}, {}
    for j, l in enumerate(layers):
        weights[l] = LayerWeights(
            trainer.W_enc[j].detach(),
            trainer.b_enc[j, 0].detach(),
            trainer.W_dec[j].detach(),
            trainer.b_dec[j, 0].detach(),
            float(trainer.threshold[j]),
        )
        m, s_x, s_y = norms[l]
        stats[l] = {
            "steps": total,
            "train_tokens": n,
            "epochs": cfg.epochs,
            "train_seconds": seconds,
            "train_fve_last10pct": float(1 - tail[j]),
            "threshold_normalized": float(trainer.threshold[j]),
            "train_dead_share": float((trainer.since_fired[j] >= cfg.dead_after_tokens).float().mean()),
            "scale_in": s_x,
            "scale_out": float(torch.as_tensor(s_y).norm() / (d_out**0.5 if cfg.standardize_out else 1)),
            "input_mean_norm": float(m.norm()),
            "trained_with_layers": len(layers),
            "bf16": cfg.bf16,
        }
    return BatchedResult(layers, weights, norms, stats)


def train_layers(cfg: TrainConfig, data: dict[int, tuple], ckpt: Path, desc: str) -> BatchedResult:
    """Train every layer of ``data`` ({layer: (x [n, d_in], y [n, d_out])}, same n) together."""
    import torch

    from atlas.progress import progress
    from atlas.train import BatchOrder, lr_at, normalization, save_checkpoint

    # 1. normalization per layer, the shared batch order
    if cfg.bf16 and cfg.device == "cpu" and torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
        log.warning(  # measured on an AVX2-only EPYC, 18 layers x 2,048 features: 37 s a step against 1 s
            "bf16 autocast on a CPU without bf16 units (torch reports %s) is emulated and far slower than "
            "fp32; leave TrainConfig.bf16 off here",
            torch.backends.cpu.get_cpu_capability(),
        )
    torch.manual_seed(cfg.seed)
    layers = sorted(data)
    n = data[layers[0]][0].shape[0]
    if any(data[l][0].shape[0] != n for l in layers):
        raise ValueError("every layer needs the same number of tokens")
    norms = {l: normalization(cfg, *data[l]) for l in layers}
    d_in, d_out = data[layers[0]][0].shape[1], data[layers[0]][1].shape[1]
    y_means = torch.stack([(data[l][1] / norms[l][2]).mean(0) for l in layers])  # [L, d_out]
    trainer = BatchedTrainer(cfg, len(layers), d_in, d_out, y_means)
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state.get("layers") == layers:
            trainer.load(state)
    order = BatchOrder.of(cfg, n)
    total = order.total
    mx = torch.stack([norms[l][0] for l in layers])[:, None, :]  # [L, 1, d_in]
    sx = torch.tensor([norms[l][1] for l in layers])[:, None, None]  # [L, 1, 1]
    sy = torch.stack([torch.as_tensor(norms[l][2]).float().expand(d_out) for l in layers])[:, None, :]  # [L, 1, d_out]
    losses: list[torch.Tensor] = []
    t0 = time.monotonic()
    # 2. the steps (batches normalized as they are drawn: no second copy of the activations)
    with progress(desc, total=total, unit="steps") as bar:
        bar.advance(trainer.step)
        while trainer.step < total:
            idx = order.rows(trainer.step)
            xb = (torch.stack([data[l][0][idx] for l in layers]) - mx) / sx  # [L, batch, d_in]
            yb = torch.stack([data[l][1][idx] for l in layers]) / sy  # [L, batch, d_out]
            losses.append(trainer.train_step(cfg, xb, yb, lr_at(cfg, trainer.step, total)))
            bar.advance()
            # 3. checkpoint
            if order.checkpoint_due(trainer.step):
                save_checkpoint(ckpt, {**trainer.state(), "layers": layers})
    seconds = time.monotonic() - t0
    hist = torch.stack(losses) if losses else torch.full((1, len(layers)), float("nan"))  # [steps, L]
    tail = hist[-max(hist.shape[0] // 10, 1) :].mean(0)  # [L]
    return _layer_results(cfg, trainer, layers, norms, tail, n, d_out, total, seconds)
