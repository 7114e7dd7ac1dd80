"""A GGUF file checked before transformers reads it, so a bad file gets a message that says what is wrong.

1. The fixed header: magic ``GGUF``, a version this reader knows (2 or 3), and the tensor and
   metadata counts (little-endian uint64), all within the file.
2. The metadata and tensor table, parsed by the ``gguf`` package (memory-mapped, nothing loaded).
3. Every tensor's data lies inside the file (a truncated download ends inside one).
Any failure is a ModelLoadError naming the file and the step.
"""

from __future__ import annotations

import struct
from pathlib import Path

from atlas.errors import ModelLoadError

KNOWN_VERSIONS = (2, 3)


def check_gguf(path: str | Path) -> None:
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(24)
    if head[:4] != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (bad magic bytes)")
    if len(head) < 24:
        raise ModelLoadError(f"{path} is truncated: {size} bytes, shorter than a GGUF header (24 bytes)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in KNOWN_VERSIONS:
        raise ModelLoadError(f"{path}: GGUF version {version} is not one this reader knows ({KNOWN_VERSIONS})")
    if n_tensors > size or n_kv > size:
        raise ModelLoadError(
            f"{path} is damaged: its header claims {n_tensors} tensors and {n_kv} metadata "
            f"entries in a file of {size} bytes"
        )
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure of the metadata is the file's fault
        raise ModelLoadError(
            f"{path} is truncated or damaged: its GGUF metadata cannot be read ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise ModelLoadError(f"{path} is truncated: tensor {t.name!r} ends at byte {end}, the file has {size}")
