"""Merge-exact building blocks for statistics collected over blocks of a corpus (docs/scale.md).

A job split into blocks of sequences must give the same atlas whatever the blocks are, so every
quantity a block contributes has to combine associatively, bit for bit:
1. Sums of floats: each batch's float64 sum is cut into three 30-bit integer digits (scales 2^20,
   2^-10, 2^-40; what lies below 2^-40 is dropped, the same way every time), and digits add as
   int64, exactly and in any order. A batch is the same whichever block holds it (blocks are whole
   batches), so its float64 sum is too.
2. Random keys: the uniform key of an item is a hash of (seed, layer, feature, document, position)
   (splitmix64 mixing), not a draw from a stream, so it does not depend on what was seen before.
"""

from __future__ import annotations

import hashlib

import torch

_SCALES = (2.0**20, 2.0**-10, 2.0**-40)  # the weight of each digit
_C1, _C2 = 0xBF58476D1CE4E5B9 - (1 << 64), 0x94D049BB133111EB - (1 << 64)  # splitmix64, as signed int64
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)


def fixed_digits(x: torch.Tensor) -> torch.Tensor:
    """x [...] float64 -> [3, ...] int64 digits whose weighted sum is x (to 2^-40, rounded down)."""
    out, r = [], x.double()
    for s in _SCALES:
        d = torch.floor(r / s)
        out.append(d)
        r = r - d * s  # exact: the bits of r below s
    return torch.stack(out).long()


def fixed_value(digits: torch.Tensor) -> torch.Tensor:
    """[3, ...] int64 digit sums -> [...] float64."""
    d = digits.double()
    return d[0] * _SCALES[0] + d[1] * _SCALES[1] + d[2] * _SCALES[2]


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _srl(x, 30)) * _C1
    x = (x ^ _srl(x, 27)) * _C2
    return x ^ _srl(x, 31)


def stream_key(seed: int, layer: int) -> int:
    """A 62-bit key per (seed, layer): a layer's keys do not depend on which other layers run with it."""
    return int.from_bytes(hashlib.sha256(f"activations/{int(seed)}/{int(layer)}".encode()).digest()[:8], "little") >> 2


def hashed_uniform(key: int, feature: torch.Tensor, doc: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """[n] float64 in (0, 1): a deterministic uniform per (key, feature, doc, pos); all int64 [n]."""
    h = _mix(feature.long() + key)
    h = _mix(h ^ (doc.long() * _GOLDEN))
    h = _mix(h ^ (pos.long() + _GOLDEN))
    return (_srl(h, 11).double() + 0.5) * 2.0**-53
