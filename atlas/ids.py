"""Feature ids.

Public ids follow Neuronpedia's convention, ``model / source / index`` (e.g.
``gpt2-small/8-tres-dc/1234``), where a *source* is one transcoder layer
(``{layer}-{set_name}``). Inside the database a feature is one BIGINT, ``fid = sid * 2**32 + idx``
(``sid`` = the source's integer key), so edge tables join on a single integer column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atlas.errors import NotFoundError

FID_SHIFT = 32
FID_MASK = (1 << FID_SHIFT) - 1
# A canonical index: ASCII decimal digits, no leading zero (``05`` is not ``5``), below 2**32.
# (str.isdigit accepts '²' and '٥', which int() then refuses or reads as another number.)
_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")


def make_fid(sid: int, idx: int) -> int:
    return (int(sid) << FID_SHIFT) | int(idx)


def split_fid(fid: int) -> tuple[int, int]:
    return int(fid) >> FID_SHIFT, int(fid) & FID_MASK


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
    def parse(cls, text: str) -> "FeatureRef":
        parts = text.strip().split("/")
        if len(parts) != 3 or not all(parts) or _INDEX.fullmatch(parts[2]) is None or int(parts[2]) > FID_MASK:
            shown = text if len(text) <= 120 else text[:100] + f"... ({len(text)} characters)"
            raise NotFoundError(
                f"feature id {shown!r} is not of the form 'model/source/index' with index a decimal number "
                f"without leading zeros below 2**32 (e.g. 'gpt2-small/8-tres-dc/1234')"
            )
        return cls(parts[0], parts[1], int(parts[2]))
