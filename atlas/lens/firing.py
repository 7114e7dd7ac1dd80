"""Does feature (l, i) fire on a short token sequence? Batched forward passes for WeightLens.

Implements the forward-pass checks of docs/method.md §2.2, §2.5 and §2.6.

1. Sequences ([BOS, t], or [BOS] + a description) are sorted by length and grouped into batches of
   about ``batch_tokens`` tokens, right-padded. The models are causal, so padding *after* the real
   tokens cannot change any real position: no attention mask is needed, and only real positions
   are read.
2. Each batch runs with ``stop_at_layer = l + 1`` and a hook that keeps the transcoder's input
   (``hook_in`` of layer l) [batch, pos, d_in] and then ends the pass (the rest of block l is skipped).
3. A feature's pre-activation at a position is the dot product of that position's (SAELens-
   processed) input with the feature's encoder column, plus its bias: computed only for the
   (sequence, feature) pairs asked about, never for all features.
4. Active means the transcoder's activation is > 0: z > 0 for ReLU, z > max(0, θ) for JumpReLU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class _Reached(Exception):
    """Raised by the read hook to end a forward pass once the transcoder's input is captured."""


def active(tc, pre: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """pre [n, ...] pre-activations of features feat [n] -> bool [n, ...] (activation > 0)."""
    on = pre > 0
    theta = tc.threshold
    if theta is not None:
        th = theta.detach()[feat].to(pre.dtype)
        on &= pre > th.reshape(-1, *([1] * (pre.dim() - 1)))
    return on


def pre_activation_pairs(tc, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """x [n, ..., d_in] model activations, feat [n] feature ids -> pre-activations [n, ...]."""
    sae = tc.sae
    with torch.inference_mode():
        xin = sae.process_sae_in(x)  # dtype cast, input normalization
        w = sae.W_enc.detach()[:, feat].T  # [n, d_in]
        w = w.reshape(w.shape[0], *([1] * (xin.dim() - 2)), w.shape[1])
        return (xin * w).sum(dim=-1) + sae.b_enc.detach()[feat].reshape(-1, *([1] * (xin.dim() - 2)))


def padded_runs(
    model, seqs: list[torch.Tensor], hook: str, layer: int, batch_tokens: int, pad_id: int = 0
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Run every sequence up to ``hook`` of ``layer``; yields (seq indices [b], x [b, T, d],
    lengths [b], tokens [b, T]).

    Sequences are batched by length (right-padded); positions >= length are padding. A sequence
    longer than the model's context (a long WeightLens description) is cut to its first n_ctx
    tokens: the model cannot read past them."""
    if not seqs:
        return
    seqs = [s[: model.cfg.n_ctx] for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs])
    order = torch.argsort(lengths, stable=True).tolist()  # shortest first
    batches, start = [], 0
    for n in range(1, len(order) + 1):  # batch boundaries: ragged bookkeeping
        if n == len(order) or (n - start + 1) * int(lengths[order[n]]) > batch_tokens:
            batches.append(order[start:n])
            start = n
    for batch in batches:
        idx = torch.tensor(batch)
        toks = torch.nn.utils.rnn.pad_sequence(
            [seqs[j] for j in batch], batch_first=True, padding_value=pad_id
        )  # [b, T]
        store = {}

        def keep(act, hook=None):  # act [batch, pos, d_in]
            store["x"] = act.detach()
            raise _Reached  # nothing after the read point is needed

        try:
            with torch.inference_mode():
                model.run_with_hooks(toks.to(model.cfg.device), fwd_hooks=[(hook, keep)], stop_at_layer=layer + 1)
        except _Reached:
            pass
        yield idx, store["x"], lengths[idx], toks
