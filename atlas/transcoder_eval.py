"""Quality of a transcoder on held-out text (stored as source_metrics, method 'reconstruction').

1. Reconstruction, on held-out activation pairs (x, y) [n, d_model] (BOS positions excluded):
   fve = 1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2  (fraction of MLP-output variance explained);
   l0 = mean number of active features per token; dead_share = share of features never active.
2. Next-token loss on held-out sequences, full forward pass: clean; with blocks.l.hook_mlp_out
   replaced by the transcoder's output from blocks.l.ln2.hook_normalized (every position but BOS);
   and with the MLP output zeroed there (the zero baseline). loss_increase = patched - clean;
   loss_recovered = (zero - patched) / (zero - clean): 1 = as good as the MLP, 0 = no better than zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer


def reconstruction(sae, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> dict:
    """fve, l0, dead_share (and zero-baseline fve = 0 by definition) of ``sae`` on (x, y)."""
    import torch

    err = 0.0
    active_tokens = 0.0
    ever = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            f = sae.encode(x[i : i + chunk])  # [chunk, d_sae]
            y_hat = sae.decode(f)  # [chunk, d_out]
            err += float((y_hat - y[i : i + chunk]).pow(2).sum())
            active = f > 0
            active_tokens += float(active.sum())
            ever |= active.any(0)
        total = float((y - y.mean(0)).pow(2).sum())
    return {
        "fve": 1 - err / total,
        "l0": active_tokens / x.shape[0],
        "dead_share": 1 - float(ever.float().mean()),
        "eval_tokens": int(x.shape[0]),
    }


def next_token_loss(
    model: HookedTransformer, tokens: torch.Tensor, layer: int, sae, clean: float | None = None
) -> dict:
    """Clean, transcoder-patched and zero-ablated next-token loss on ``tokens`` [batch, seq]."""
    import torch

    hook_in, hook_out = f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    seen: dict[str, torch.Tensor] = {}

    def keep_input(act, hook):  # act [batch, pos, d_model]
        seen["x"] = act

    def patch(act, hook):
        out = sae.decode(sae.encode(seen["x"])).to(act.dtype)
        out[:, 0] = act[:, 0]  # BOS position keeps the MLP's output (it was not trained on)
        return out

    def zero(act, hook):
        out = torch.zeros_like(act)
        out[:, 0] = act[:, 0]
        return out

    with torch.no_grad():
        if clean is None:
            clean = float(model(tokens, return_type="loss"))
        patched = float(
            model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_in, keep_input), (hook_out, patch)])
        )
        zeroed = float(model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_out, zero)]))
    recovered = (zeroed - patched) / (zeroed - clean) if zeroed != clean else float("nan")
    return {
        "loss_clean": clean,
        "loss_patched": patched,
        "loss_zero_ablation": zeroed,
        "loss_increase": patched - clean,
        "loss_recovered": recovered,
        "loss_tokens": int(tokens.numel()),
    }
