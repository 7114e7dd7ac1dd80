"""Token projections of every feature of a layer at once: input (W_E · f_enc) and output (f_dec · W_U).

Implements docs/method.md §2.1 and §2.3 (the matrix part; the outlier rule is in outliers.py).

1. Both are one product A [F, d] @ B [d, V]: inputs A = W_encᵀ, B = W_Eᵀ (raw embedding, no norm,
   no embedding scale); outputs A = W_dec, B = W_U.
2. Split rows into blocks of ``feature_block`` features and columns into blocks of ``vocab_block``
   tokens; each [f_block, v_block] score block is one matrix-matrix product in the compute dtype.
3. Each block updates the rows' streaming top-k pool (and Σ|s|, Σs, Σs²); for outputs a second pool
   of the negated scores gives the bottom-k (suppressed) tokens.
4. The per-block pools are stacked into one pool per feature. Peak memory is one score block plus
   the pools, never [F, V].
"""

from __future__ import annotations

from typing import Literal, overload

import torch

from atlas.lens.outliers import StreamingTopK


# The two typings: with bottom=True the second pool is always there, without it always None.
@overload
def stream_pools(
    A: torch.Tensor,
    B: torch.Tensor,
    k: int,
    *,
    feature_block: int,
    vocab_block: int,
    dtype: torch.dtype,
    device: str,
    bottom: Literal[True],
    moments: bool = False,
    on_block=None,
    track_abs: bool | None = None,
) -> tuple[StreamingTopK, StreamingTopK]: ...


@overload
def stream_pools(
    A: torch.Tensor,
    B: torch.Tensor,
    k: int,
    *,
    feature_block: int,
    vocab_block: int,
    dtype: torch.dtype,
    device: str,
    bottom: Literal[False] = False,
    moments: bool = False,
    on_block=None,
    track_abs: bool | None = None,
) -> tuple[StreamingTopK, None]: ...


def stream_pools(
    A: torch.Tensor,
    B: torch.Tensor,
    k: int,
    *,
    feature_block: int,
    vocab_block: int,
    dtype: torch.dtype,
    device: str,
    bottom: bool = False,
    moments: bool = False,
    on_block=None,
    track_abs: bool | None = None,
) -> tuple[StreamingTopK, StreamingTopK | None]:
    """Top-k (and optionally bottom-k) pools of the rows of A [F, d] @ B [d, V] -> pools over F rows.
    Σ|s| is tracked for the one-sided case unless ``track_abs`` says otherwise (the input side needs it).

    ``on_block(n_rows)`` is called after each row block (progress)."""
    F, V = A.shape[0], B.shape[1]
    Bd = B.to(device=device, dtype=dtype)  # [d, V]
    tops, bots = [], []
    for f0 in range(0, F, feature_block):
        Ab = A[f0 : f0 + feature_block].to(device=device, dtype=dtype)  # [f_block, d]
        top = StreamingTopK(
            Ab.shape[0], k, device=device, moments=moments, track_abs=(not bottom) if track_abs is None else track_abs
        )
        bot = (
            StreamingTopK(Ab.shape[0], k, device=device, moments=moments, negate=True, track_abs=False)
            if bottom
            else None
        )
        for v0 in range(0, V, vocab_block):
            S = Ab @ Bd[:, v0 : v0 + vocab_block]  # [f_block, v_block]
            cols = torch.arange(v0, v0 + S.shape[1], device=device)
            top.update(S, cols)
            if bot is not None:
                bot.update(S, cols)
            del S
        tops.append(top)
        if bot is not None:
            bots.append(bot)
        if on_block is not None:
            on_block(Ab.shape[0])
    return StreamingTopK.cat(tops), (StreamingTopK.cat(bots) if bottom else None)
