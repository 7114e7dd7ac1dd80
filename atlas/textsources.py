"""Readers for the public-domain text in three Debian packages (shared/offline-assets.md).

Each reader takes the directory the package was unpacked into (or '/' where it is installed)
and returns documents as ``(source, title, text)`` tuples:

1. SWORD zText (``sword-text-web``): ``*.bzs`` holds 12-byte block entries (offset, size,
   uncompressed size; little-endian uint32) into ``*.bzz``, a file of zlib blocks; ``*.bzv``
   holds 10-byte verse entries (block uint32, offset uint32, size uint16) into the uncompressed
   block. Verses are OSIS XML: footnotes and titles are dropped, other tags stripped; one document
   per chapter (a verse holding ``<chapter ... sID=`` starts one).
2. R lazy-load database (``r-cran-janeaustenr``): ``data/Rdata.rdx`` (gzip, a serialized R list)
   maps each object to (offset, length) in ``Rdata.rdb``, where each entry is a 4-byte length plus
   a zlib stream of a serialized R character vector (one line per element); parsed with ``rdata``.
   One document per chapter (a line starting ``CHAPTER`` / ``Chapter`` starts one).
3. fortunes: plain text files under ``usr/share/games/fortunes/``; entries are separated by lines
   holding ``%``; the ``.dat`` index and ``.u8`` link files are skipped; one document per entry.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

from atlas.errors import AssetError

Doc = tuple[str, str, str]  # (source, title, text)

_DROP = re.compile(r"<note\b.*?</note>|<title\b.*?</title>", re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t]+")
_CHAPTER = re.compile(r"<chapter\b[^>]*\bsID=\"([^\"]+)\"")


def read_sword_ztext(root: Path, source: str) -> list[Doc]:
    """All chapters of every zText module under ``usr/share/sword/modules/texts/ztext``."""
    modules = sorted((root / "usr/share/sword/modules/texts/ztext").glob("*"))
    if not modules:
        raise AssetError(f"no SWORD zText module under {root}/usr/share/sword/modules/texts/ztext")
    docs: list[Doc] = []
    for module in modules:
        for testament in ("ot", "nt"):
            if (module / f"{testament}.bzs").is_file():
                docs += _ztext_chapters(module, testament, source)
    return docs


def _ztext_chapters(module: Path, testament: str, source: str) -> list[Doc]:
    bzs = (module / f"{testament}.bzs").read_bytes()
    bzz = (module / f"{testament}.bzz").read_bytes()
    bzv = (module / f"{testament}.bzv").read_bytes()
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs) - 11, 12)]
    cache: dict[int, bytes] = {}
    docs: list[Doc] = []
    title = ""
    verses: list[str] = []  # the current chapter's verses
    for i in range(0, len(bzv) - 9, 10):
        block, offset, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0 or block >= len(blocks):
            continue
        if block not in cache:
            start, csize, _ = blocks[block]
            try:
                cache = {block: zlib.decompress(bzz[start : start + csize])}
            except zlib.error as exc:
                raise AssetError(f"corrupt SWORD block {block} in {module}/{testament}.bzz: {exc}") from exc
        raw = cache[block][offset : offset + size].decode("utf-8", errors="replace")
        chapter = _CHAPTER.search(raw)
        if chapter:
            if verses:
                docs.append((source, title, " ".join(verses)))
            title, verses = chapter.group(1), []
        text = _SPACE.sub(" ", _TAG.sub("", _DROP.sub("", raw))).strip()
        if text:
            verses.append(text)
    if verses:
        docs.append((source, title, " ".join(verses)))
    return docs


def read_janeaustenr(root: Path) -> list[Doc]:
    """Jane Austen's six novels, one document per chapter."""
    data = root / "usr/lib/R/site-library/janeaustenr/data"
    try:
        index = _r_object(gzip.decompress((data / "Rdata.rdx").read_bytes()))
        rdb = (data / "Rdata.rdb").read_bytes()
    except (OSError, EOFError) as exc:
        raise AssetError(f"cannot read the janeaustenr lazy-load database in {data}: {exc}") from exc
    docs: list[Doc] = []
    for name, (offset, length) in index["variables"].items():
        blob = rdb[int(offset) : int(offset) + int(length)]
        lines = [str(x) for x in _r_object(zlib.decompress(blob[4:]))]
        docs += _chapters(lines, f"Jane Austen: {name}")
    return docs


def _r_object(raw: bytes):
    import warnings

    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: "Unknown file type: assumed RDS"
        return rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True))


def _chapters(lines: list[str], source: str) -> list[Doc]:
    docs: list[Doc] = []
    title = ""
    paragraphs: list[str] = []  # the current chapter's paragraphs
    current: list[str] = []  # the current paragraph's lines
    for line in lines + ["CHAPTER END"]:
        line = line.strip()
        if re.match(r"(CHAPTER|Chapter)\b", line):
            if current:
                paragraphs.append(" ".join(current))
            if paragraphs:
                docs.append((source, title, "\n\n".join(paragraphs)))
            title, paragraphs, current = line, [], []
        elif not line:
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(line)
    return docs


def read_fortunes(root: Path) -> list[Doc]:
    """Every fortune, one document each (entries separated by '%' lines)."""
    directory = root / "usr/share/games/fortunes"
    files = sorted(p for p in directory.glob("*") if p.is_file() and p.suffix not in (".dat", ".u8"))
    if not files:
        raise AssetError(f"no fortune files in {directory}")
    docs: list[Doc] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", text, flags=re.M):
            entry = entry.strip("\n")
            if entry.strip():
                docs.append(("fortunes", path.name, entry))
    return docs
