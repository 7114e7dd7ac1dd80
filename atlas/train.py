"""Transcoder training for the embedded default: MLP input -> MLP output, per layer.

1. Collect activation pairs (x = ``blocks.l.ln2.hook_normalized``, y = ``blocks.l.hook_mlp_out``,
   [tokens, d_model]) for every layer in one forward pass per batch with ``stop_at_layer`` (the
   262k-word unembedding is never computed); the BOS position is dropped (its activations are
   outliers the model uses as an attention sink). Train text and held-out text are collected apart.
2. Normalize: x is centred (ln2.hook_normalized is dominated by a constant direction: its mean
   holds ~97 % of its norm in Gemma 3) and x and y are scaled by scalars so that
   E||x - mean||^2 = E||y||^2 = 1 (the learning rate then suits every layer); the mean and scales
   are folded back into the weights before saving, so the saved transcoder reads the raw hook.
3. Train BatchTopK (Bussmann et al. 2024), every layer together (atlas/train_batched.py: parameters
   stacked [n_layers, ...], one Adam step across layers; ``train_layer`` below is the single-layer
   form): z = x W_enc + b_enc; the k * batch largest ReLU(z) values over the whole batch stay, the
   rest are 0; y_hat = f W_dec + b_dec. Loss = normalized
   MSE + aux_coeff * AuxK loss (Gao et al. 2024: features silent for ``dead_after_tokens`` tokens
   reconstruct the residual with their top aux_k values). Rows of W_dec stay unit-norm. Adam, cosine
   learning-rate decay. The inference threshold theta is the running mean of the smallest value
   kept per batch.
4. Save as a SAELens ``JumpReLUTranscoder`` (threshold = theta for every feature; f = z * [z > theta]),
   the form SAELens itself gives trained BatchTopK SAEs, with ``training_config.json`` and
   ``metrics.json`` beside ``cfg.json`` / ``sae_weights.safetensors``.
5. Resume: a layer whose ``metrics.json`` matches the config hash is skipped; a killed training resumes
   from ``layers.checkpoint.pt`` when the same layers are still to train (written every
   ``CHECKPOINT_EVERY`` steps).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from atlas.config import CorpusConfig, TrainConfig
from atlas.errors import TranscoderError

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer

log = logging.getLogger(__name__)  # each layer's metrics once trained, INFO
CHECKPOINT_EVERY = 50
HOOK_IN = "blocks.{layer}.ln2.hook_normalized"  # [batch, pos, d_model]
HOOK_OUT = "blocks.{layer}.hook_mlp_out"  # [batch, pos, d_model]


def config_hash(cfg: TrainConfig, corpus: CorpusConfig, model_key: str) -> str:
    """What a trained layer depends on: everything but the list of layers (adding a layer keeps the others)."""
    from atlas.db import config_hash as h

    train = {k: v for k, v in asdict(cfg).items() if k not in ("layers", "device")}
    return h({"train": train, "corpus": asdict(corpus), "model": model_key})


def layer_dir(out_dir: Path, layer: int) -> Path:
    return out_dir / f"layer_{layer}"


def is_done(out_dir: Path, layer: int, chash: str) -> bool:
    path = layer_dir(out_dir, layer) / "metrics.json"
    return path.is_file() and json.loads(path.read_text()).get("config_hash") == chash


# ---- 1. activations ----------------------------------------------------------------------------------


def collect(model: HookedTransformer, batches, layers: list[int], n_tokens: int, desc: str) -> dict:
    """{layer: (x [n, d_model], y [n, d_model])} float32, BOS positions dropped."""
    import torch

    from atlas.progress import progress

    names = {HOOK_IN.format(layer=l) for l in layers} | {HOOK_OUT.format(layer=l) for l in layers}
    xs: dict[int, list] = {l: [] for l in layers}
    ys: dict[int, list] = {l: [] for l in layers}
    with progress(desc, total=n_tokens, unit="tok") as bar, torch.no_grad():
        for tokens in batches:  # [batch, seq]
            _, cache = model.run_with_cache(tokens, stop_at_layer=max(layers) + 1, names_filter=lambda n: n in names)
            for l in layers:
                xs[l].append(cache[HOOK_IN.format(layer=l)][:, 1:].reshape(-1, model.cfg.d_model).float())
                ys[l].append(cache[HOOK_OUT.format(layer=l)][:, 1:].reshape(-1, model.cfg.d_model).float())
            bar.advance(tokens.numel())
    return {l: (torch.cat(xs[l]), torch.cat(ys[l])) for l in layers}


# ---- 3. training ----------------------------------------------------------------------------------------


def batch_topk(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k * batch largest ReLU(z) over the batch: z [batch, d_sae] -> (f [batch, d_sae], min kept)."""
    import torch

    acts = torch.relu(z)
    n_keep = min(k * z.shape[0], acts.numel())
    values, flat = acts.flatten().topk(n_keep, sorted=False)
    f = torch.zeros_like(acts).flatten().scatter_(0, flat, values).view_as(acts)
    positive = values[values > 0]
    return f, (positive.min() if positive.numel() else torch.zeros((), dtype=z.dtype))


def _init_weights(cfg: TrainConfig, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded initial (W_enc [d_in, d_sae], W_dec [d_sae, d_out] with unit rows): the same for every layer."""
    import torch

    g = torch.Generator().manual_seed(cfg.seed)
    W_dec = torch.randn(cfg.d_sae, d_out, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_enc = torch.randn(d_in, cfg.d_sae, generator=g) / math.sqrt(d_in)
    return W_enc, W_dec


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Cosine decay from lr to 10 % of it over ``total`` steps."""
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))


@dataclass(frozen=True)
class BatchOrder:
    """The rows each training step takes: one seeded shuffle per epoch, so a resumed run sees the same batches."""

    batch_size: int  # rows per step
    steps_per_epoch: int  # batches per pass over the n rows (at least 1)
    total: int  # steps of the whole run: steps_per_epoch * epochs
    orders: list  # per epoch, a permutation of the rows: a tensor [n] (torch.randperm)

    @classmethod
    def of(cls, cfg: TrainConfig, n: int) -> BatchOrder:
        """``cfg.epochs`` passes over ``n`` rows in batches of ``cfg.batch_size``, shuffled by ``cfg.seed``."""
        import torch

        steps_per_epoch = max(n // cfg.batch_size, 1)
        g = torch.Generator().manual_seed(cfg.seed)
        orders = [torch.randperm(n, generator=g) for _ in range(cfg.epochs)]
        return cls(cfg.batch_size, steps_per_epoch, steps_per_epoch * cfg.epochs, orders)

    def rows(self, step: int) -> torch.Tensor:
        """The row indices [batch] of step ``step`` (0-based)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        return self.orders[epoch][i * self.batch_size : (i + 1) * self.batch_size]

    def checkpoint_due(self, step: int) -> bool:
        """Whether a checkpoint is written once ``step`` steps are done: every CHECKPOINT_EVERY, not at the end."""
        return step % CHECKPOINT_EVERY == 0 and step < self.total


def save_checkpoint(ckpt: Path, state: dict) -> None:
    """``state`` written to ``ckpt`` through a temporary file: a killed write leaves the previous checkpoint whole."""
    import torch

    tmp = ckpt.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(ckpt)


def normalization(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """(mx [d_in], sx scalar, sy [d_out] or scalar) of step 2 for one layer's (x, y) [n, d_model]."""
    mx = x.mean(0)  # [d_in]
    sx = float((x - mx).pow(2).sum(-1).mean().sqrt())
    sy: torch.Tensor | float
    if cfg.standardize_out:  # [d_out]: each dimension to unit variance
        sd = y.std(0)
        sy = sd.clamp(min=1e-3 * float(sd.max())) * math.sqrt(y.shape[1])
    else:
        sy = float(y.pow(2).sum(-1).mean().sqrt())
    return mx, sx, sy


class CheckpointState:
    """What a trainer's checkpoint holds (params, Adam state, dead-feature counters, threshold,
    step); shared by the single-layer and the batched trainer."""

    # set by each trainer's __init__
    params: list[torch.Tensor]  # the trained parameters, in a fixed order
    opt: torch.optim.Optimizer  # Adam over params
    since_fired: torch.Tensor  # tokens since each feature was last active
    threshold: float | torch.Tensor  # the running theta: one number, or one per layer
    step: int  # optimizer steps taken

    def state(self) -> dict:
        return {
            "params": [p.detach() for p in self.params],
            "opt": self.opt.state_dict(),
            "since_fired": self.since_fired,
            "threshold": self.threshold,
            "step": self.step,
        }

    def load(self, state: dict) -> None:
        import torch

        with torch.no_grad():
            for p, v in zip(self.params, state["params"]):
                p.copy_(v)
        self.opt.load_state_dict(state["opt"])
        self.since_fired, self.threshold, self.step = state["since_fired"], state["threshold"], state["step"]


class _Trainer(CheckpointState):
    """The BatchTopK training state of one layer (normalized units)."""

    threshold: float  # theta of this one layer

    def __init__(self, cfg: TrainConfig, d_in: int, d_out: int, y_mean: torch.Tensor):
        import torch

        W_enc, W_dec = _init_weights(cfg, d_in, d_out)
        self.W_dec = W_dec.requires_grad_()  # [d_sae, d_out]
        self.W_enc = W_enc.requires_grad_()  # [d_in, d_sae]
        self.b_enc = torch.zeros(cfg.d_sae, requires_grad=True)  # [d_sae]
        self.b_dec = y_mean.clone().requires_grad_()  # [d_out]
        self.params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.9, 0.999))
        self.since_fired = torch.zeros(cfg.d_sae)  # tokens since last active
        self.threshold = 0.0
        self.step = 0

    def train_step(self, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
        import torch

        for group in self.opt.param_groups:
            group["lr"] = lr
        z = x @ self.W_enc + self.b_enc  # [batch, d_sae]
        f, kept_min = batch_topk(z, cfg.k)
        y_hat = f @ self.W_dec + self.b_dec  # [batch, d_out]
        denom = (y - y.mean(0)).pow(2).sum(-1).mean()
        mse = (y_hat - y).pow(2).sum(-1).mean() / denom
        loss = mse
        fired = (f > 0).any(0)
        self.since_fired = torch.where(fired, 0.0, self.since_fired + x.shape[0])
        dead = self.since_fired >= cfg.dead_after_tokens
        if dead.any():  # AuxK: the dead features' top aux_k values reconstruct the residual
            k_aux = min(cfg.aux_k, int(dead.sum()))
            z_dead = torch.where(dead, torch.relu(z), torch.zeros_like(z))
            values, idx = z_dead.topk(k_aux, dim=-1)
            f_aux = torch.zeros_like(z).scatter_(-1, idx, values)
            residual = (y - y_hat).detach()
            aux = (f_aux @ self.W_dec - residual).pow(2).sum(-1).mean() / residual.pow(2).sum(-1).mean().clamp(min=1e-9)
            loss = loss + cfg.aux_coeff * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        kept = float(kept_min.detach())
        self.threshold = 0.99 * self.threshold + 0.01 * kept if self.step else kept
        self.step += 1
        return float(mse.detach())


def train_layer(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, ckpt: Path, desc: str):
    """Train one layer on (x, y) [n, d_model]; returns (trainer, (mx, sx, sy) normalization, train stats)."""
    import torch

    from atlas.progress import progress

    torch.manual_seed(cfg.seed)
    mx, sx, sy = normalization(cfg, x, y)
    xn, yn = (x - mx) / sx, y / sy
    trainer = _Trainer(cfg, x.shape[1], y.shape[1], yn.mean(0))
    if ckpt.is_file():
        trainer.load(torch.load(ckpt, weights_only=False))
    n = x.shape[0]
    order = BatchOrder.of(cfg, n)
    total = order.total
    losses: list[float] = []
    t0 = time.monotonic()
    with progress(desc, total=total, unit="steps") as bar:
        bar.advance(trainer.step)
        while trainer.step < total:
            idx = order.rows(trainer.step)
            losses.append(trainer.train_step(cfg, xn[idx], yn[idx], lr_at(cfg, trainer.step, total)))
            bar.advance()
            if order.checkpoint_due(trainer.step):
                save_checkpoint(ckpt, trainer.state())
    tail = losses[-max(len(losses) // 10, 1) :] if losses else [float("nan")]
    stats = {
        "steps": total,
        "train_tokens": n,
        "epochs": cfg.epochs,
        "train_seconds": time.monotonic() - t0,
        "train_fve_last10pct": 1 - sum(tail) / len(tail),
        "threshold_normalized": trainer.threshold,
        "train_dead_share": float((trainer.since_fired >= cfg.dead_after_tokens).float().mean()),
        "scale_in": sx,
        "scale_out": float(torch.as_tensor(sy).norm() / (math.sqrt(y.shape[1]) if cfg.standardize_out else 1)),
        "input_mean_norm": float(mx.norm()),
    }
    return trainer, (mx, sx, sy), stats


# ---- 4. saving --------------------------------------------------------------------------------------------


class TrainedLayer(Protocol):
    """One layer's weights in normalized units, as ``to_saelens`` reads them: a ``_Trainer``, or one layer
    of the batched trainer's result (``atlas.train_batched.LayerWeights``). Read-only."""

    @property
    def W_enc(self) -> torch.Tensor: ...  # [d_in, d_sae]
    @property
    def b_enc(self) -> torch.Tensor: ...  # [d_sae]
    @property
    def W_dec(self) -> torch.Tensor: ...  # [d_sae, d_out]
    @property
    def b_dec(self) -> torch.Tensor: ...  # [d_out]
    @property
    def threshold(self) -> float: ...  # theta


def to_saelens(trainer: TrainedLayer, norm: tuple, layer: int, model_name: str):
    """Fold the normalization into a SAELens JumpReLUTranscoder in model units.

    Trained: f = JumpReLU_theta((x - mx)/sx W + b); y/sy = f D + c. In model units: W_enc = W / sx,
    b_enc = b - (mx / sx) W, W_dec = D * sy, b_dec = c * sy, theta unchanged.
    """
    mx, sx, sy = norm
    import torch
    from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    d_in, d_sae = trainer.W_enc.shape
    d_out = trainer.W_dec.shape[1]
    meta = SAEMetadata(
        hook_name=HOOK_IN.format(layer=layer),
        hook_name_out=HOOK_OUT.format(layer=layer),
        hook_layer=layer,
        hook_layer_out=layer,
        model_name=model_name,
        prepend_bos=True,
    )
    sae_cfg = JumpReLUTranscoderConfig(
        d_in=d_in, d_sae=d_sae, d_out=d_out, dtype="float32", device="cpu", apply_b_dec_to_input=False, metadata=meta
    )
    sae = JumpReLUTranscoder(sae_cfg)
    with torch.no_grad():
        sae.W_enc.copy_(trainer.W_enc / sx)
        sae.b_enc.copy_(trainer.b_enc - (mx / sx) @ trainer.W_enc)
        sae.W_dec.copy_(trainer.W_dec * sy)
        sae.b_dec.copy_(trainer.b_dec * sy)
        sae.threshold.fill_(trainer.threshold)
    sae.eval()
    return sae


def save_layer(sae, directory: Path, train_cfg: dict, metrics: dict) -> None:
    """cfg.json + sae_weights.safetensors (SAELens) + training_config.json + metrics.json (last: the done marker)."""
    tmp = directory.with_name(directory.name + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    sae.save_model(tmp)
    (tmp / "training_config.json").write_text(json.dumps(train_cfg, indent=1, default=str))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def load_trained(out_dir: Path, layers: list[int], set_name: str):
    """The trained layers as a TranscoderSet (format 'saelens-dir')."""
    from sae_lens import SAE

    from atlas.transcoders import LayerTranscoder, TranscoderSet

    tset = TranscoderSet(set_name)
    for layer in layers:
        path = layer_dir(out_dir, layer)
        if not (path / "metrics.json").is_file():
            raise TranscoderError(f"layer {layer} has not been trained into {path}; run `atlas train-transcoders`")
        sae = SAE.load_from_disk(path)
        tset.layers[layer] = LayerTranscoder(
            layer, sae, HOOK_IN.format(layer=layer), HOOK_OUT.format(layer=layer), "saelens-dir", str(path)
        )
    return tset


# ---- the whole job --------------------------------------------------------------------------------------


def resolve_layers(cfg: TrainConfig, n_layers: int) -> TrainConfig:
    """``cfg`` with ``layers = ()`` ('all') made every layer of an ``n_layers`` model; a layer outside the
    model is a TranscoderError."""
    from dataclasses import replace

    if not cfg.layers:
        return replace(cfg, layers=tuple(range(n_layers)))
    bad = [l for l in cfg.layers if not 0 <= l < n_layers]
    if bad:
        raise TranscoderError(f"layers {bad} do not exist: the model has layers 0..{n_layers - 1}")
    return cfg


def train_budget_check(cfg: TrainConfig, model: HookedTransformer, n_layers: int | None = None):
    """atlas/train_budget.py's memory plan for training ``n_layers`` (default: all of cfg.layers); raises if too big."""
    from atlas import train_budget

    return train_budget.check(cfg, len(cfg.layers) if n_layers is None else n_layers, model.cfg.d_model)


def train_transcoders(
    model: HookedTransformer, model_key: str, cfg: TrainConfig, corpus_cfg: CorpusConfig, out_dir: Path
) -> dict[int, dict]:
    """Train (or find already trained) every layer of ``cfg.layers``; returns {layer: metrics}."""
    from atlas.corpus import Corpus
    from atlas.transcoder_eval import next_token_loss, reconstruction

    cfg = resolve_layers(cfg, model.cfg.n_layers)
    chash = config_hash(cfg, corpus_cfg, model_key)
    results = {
        l: json.loads((layer_dir(out_dir, l) / "metrics.json").read_text())
        for l in cfg.layers
        if is_done(out_dir, l, chash)
    }
    todo = [l for l in cfg.layers if l not in results]
    if not todo:
        return results
    train_budget_check(cfg, model, len(todo))  # refuse before collecting anything
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus.for_model(model, corpus_cfg)
    train = collect(
        model,
        corpus.batches("train", cfg.collect_batch, cfg.n_tokens),
        todo,
        cfg.n_tokens,
        f"collect train activations (layers {todo})",
    )
    held = collect(
        model,
        corpus.batches("heldout", cfg.collect_batch, cfg.eval_tokens),
        todo,
        cfg.eval_tokens,
        "collect held-out activations",
    )
    loss_tokens = corpus.tokens("heldout", cfg.eval_loss_tokens)  # [n_seq, seq_len]
    clean = None
    train_cfg = {
        "train": asdict(cfg),
        "corpus": asdict(corpus_cfg),
        "model": model_key,
        "config_hash": chash,
        "architecture": "batchtopk -> jumprelu_transcoder",
    }
    from atlas.train_batched import train_layers

    ckpt = out_dir / "layers.checkpoint.pt"
    batched = train_layers(cfg, {l: train[l] for l in todo}, ckpt, f"train layers {todo} (batched)")
    del train
    for layer in todo:
        trainer, norm, stats = batched.weights[layer], batched.norms[layer], batched.stats[layer]
        sae = to_saelens(trainer, norm, layer, model_key)
        metrics = {**reconstruction(sae, *held[layer])}
        metrics.update(next_token_loss(model, loss_tokens, layer, sae, clean))
        clean = metrics["loss_clean"]
        metrics.update({"layer": layer, "config_hash": chash, "training": stats})
        save_layer(sae, layer_dir(out_dir, layer), train_cfg, metrics)
        results[layer] = metrics
        log.info(
            f"layer {layer}: fve {metrics['fve']:.3f}, L0 {metrics['l0']:.1f}, dead {metrics['dead_share']:.1%}, "
            f"loss +{metrics['loss_increase']:.3f} nats (recovered {metrics['loss_recovered']:.1%})"
        )
    ckpt.unlink(missing_ok=True)
    return results
