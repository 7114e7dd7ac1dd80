"""Feature ids.

Public ids follow Neuronpedia's convention, ``model / source / index`` (e.g.
``gpt2-small/8-tres-dc/1234``), where a *source* is one transcoder layer
(``{layer}-{set_name}``). Inside the database a feature is one BIGINT, ``fid = sid * 2**32 + idx``
(``sid`` = the source's integer key), so edge tables join on a single integer column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from atlas.errors import FeatureIdError, NotFoundError

FID_SHIFT = 32
FID_MASK = (1 << FID_SHIFT) - 1  # the index bits of a fid
MAX_INDEX = FID_MASK  # feature indices are in [0, 2**32)
MAX_SID = (1 << 31) - 1  # sources.sid is an INTEGER: sid in [0, 2**31), so every fid is a non-negative BIGINT
MAX_FID = (MAX_SID << FID_SHIFT) | MAX_INDEX
# A canonical index: ASCII decimal digits, no leading zero (``05`` is not ``5``), below 2**32.
# (str.isdigit accepts '²' and '٥', which int() then refuses or reads as another number.)
_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")

# The same arithmetic exists in SQL as DuckDB macros, stored in every atlas file by migration 0004:
# ``make_fid(sid, idx)``, ``fid_source(fid)`` and ``fid_index(fid)`` (docs/sql.md, "Macros").


class FidParts(NamedTuple):
    """One fid taken apart."""

    sid: int  # the source's integer key (sources.sid)
    idx: int  # the feature's index in its source, in [0, 2**32)


class FidArrays(NamedTuple):
    """Many fids taken apart, element by element (same shape as the fids)."""

    sid: np.ndarray  # int64 source keys
    idx: np.ndarray  # int64 feature indices, in [0, 2**32)


def _check(value: int, hi: int, what: str) -> int:
    if not 0 <= value <= hi:
        raise FeatureIdError(f"{what} {value} is outside [0, {hi + 1}) and does not fit a feature id")
    return value


def make_fid(sid: int, idx: int) -> int:
    """The fid of feature ``idx`` of source ``sid``: ``sid * 2**32 + idx``. Raises FeatureIdError
    unless 0 <= sid < 2**31 and 0 <= idx < 2**32. SQL: ``make_fid(sid, idx)``."""
    return (_check(int(sid), MAX_SID, "source id") << FID_SHIFT) | _check(int(idx), MAX_INDEX, "feature index")


def split_fid(fid: int) -> FidParts:
    """(sid, idx) of one fid, the inverse of ``make_fid``. SQL: ``fid_source(fid)``, ``fid_index(fid)``."""
    fid = _check(int(fid), MAX_FID, "fid")
    return FidParts(fid >> FID_SHIFT, fid & FID_MASK)


def _int64(values: Any, hi: int, what: str) -> np.ndarray:
    """``values`` (a Python int or sequence, a numpy array, a CPU torch tensor) as int64, checked to lie in [0, hi]."""
    a = np.asarray(values)
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise FeatureIdError(f"{what} values must be integers, not {a.dtype}")
    _check(int(a.min()), hi, what)  # before the cast: a uint64 above 2**63 would wrap around
    _check(int(a.max()), hi, what)
    return a.astype(np.int64, copy=False)


def make_fids(sid: Any, idx: Any) -> np.ndarray:
    """Vectorised ``make_fid``: int64 fids of the broadcast of ``sid`` and ``idx`` (each a Python int,
    a sequence, a numpy array or a CPU torch tensor), e.g. ``make_fids(3, np.arange(d_sae))`` ->
    [d_sae]. Raises FeatureIdError if any sid or idx is out of range (see ``make_fid``)."""
    return (_int64(sid, MAX_SID, "source id") << FID_SHIFT) | _int64(idx, MAX_INDEX, "feature index")


def split_fids(fids: Any) -> FidArrays:
    """Vectorised ``split_fid``: int64 (sid, idx) arrays of the shape of ``fids``."""
    a = _int64(fids, MAX_FID, "fid")
    return FidArrays(a >> FID_SHIFT, a & FID_MASK)


class FidRange(NamedTuple):
    """The fids of features [start, stop) of one source, as the half-open interval [lo, hi):
    ``lo <= fid < hi``. Because a fid sorts by (sid, idx), a range is one contiguous run of any
    table sorted or zone-mapped by fid, which is why deletes and lookups of a layer use it."""

    lo: int  # the first fid in the range
    hi: int  # one past the last fid in the range (not in it)

    def params(self) -> dict[str, int]:
        """The SQL parameters ``$lo`` and ``$hi`` of ``sql``."""
        return {"lo": self.lo, "hi": self.hi}

    def sql(self, column: str = "fid") -> str:
        """The SQL condition that ``column`` lies in the range, with parameters ``$lo``, ``$hi`` (``params``)."""
        return f"{column} >= $lo AND {column} < $hi"

    def contains(self, fid: int) -> bool:
        return self.lo <= fid < self.hi


def fid_range(sid: int, start: int = 0, stop: int | None = None) -> FidRange:
    """The half-open fid range [lo, hi) of features start <= idx < stop of source ``sid``. Without
    ``stop``, every feature of the source whatever its width (``stop = 2**32``), so
    ``fid_range(sid).hi == make_fid(sid + 1, 0)``. Raises FeatureIdError unless 0 <= start <= stop <= 2**32."""
    stop = MAX_INDEX + 1 if stop is None else int(stop)
    _check(stop, MAX_INDEX + 1, "range end")
    _check(int(start), stop, "range start")
    base = make_fid(sid, 0)
    return FidRange(base + int(start), base + stop)


def source_id(layer: int, set_name: str) -> str:
    return f"{layer}-{set_name}"


@dataclass(frozen=True)
class FeatureRef:
    model: str
    source: str
    index: int

    def __str__(self) -> str:
        return f"{self.model}/{self.source}/{self.index}"

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        parts = text.strip().split("/")
        if len(parts) != 3 or not all(parts) or _INDEX.fullmatch(parts[2]) is None or int(parts[2]) > FID_MASK:
            shown = text if len(text) <= 120 else text[:100] + f"... ({len(text)} characters)"
            raise NotFoundError(
                f"feature id {shown!r} is not of the form 'model/source/index' with index a decimal number "
                f"without leading zeros below 2**32 (e.g. 'gpt2-small/8-tres-dc/1234')"
            )
        return cls(parts[0], parts[1], int(parts[2]))
