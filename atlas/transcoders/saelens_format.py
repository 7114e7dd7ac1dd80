"""SAELens transcoders: a directory per layer with ``cfg.json`` + ``sae_weights.safetensors``
(``SAE.load_from_disk``), or a pretrained release + id (``SAE.from_pretrained``, hub). Also the
save helper the training job uses, so what atlas trains reads back exactly. docs/method.md §1.

1. Directory: discover every ``cfg.json`` with a ``sae_weights.safetensors`` beside it (the
   location itself may be one such directory). Its layer is the block index in the config's
   ``hook_name`` (metadata or top level), else ``layer_{l}`` / ``blocks.{l}`` in the directory name.
2. Load with ``SAE.load_from_disk``; refuse SAEs that are not transcoders; hooks from the config's
   ``hook_name`` / ``hook_name_out`` (default ln2.hook_normalized -> hook_mlp_out).
3. Release: ``RELEASE`` (every id of the release, one per layer: the first listed) or
   ``RELEASE/ID[,ID...]``; the layer of an id from ``layer_{l}`` in it, else from the loaded config.
4. Check shapes and finiteness like every other format (build.check_tensors).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlas.errors import AssetError, TranscoderError
from atlas.transcoders.build import check_tensors, default_hooks, layer_of_hook
from atlas.transcoders.source import Source
from atlas.transcoders.transcoder_set import LayerTranscoder

if TYPE_CHECKING:
    from sae_lens import Transcoder

NAME = "saelens"
RELEASE_NAME = "saelens-release"
DEFAULT_SET_NAME = "saelens-transcoder"
FILE_RULE = "*/cfg.json + sae_weights.safetensors"
CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
_LAYER_IN_NAME = re.compile(r"(?:layer_|blocks\.)(\d+)(?:\D|$)")


def _hook_names(cfg: dict) -> tuple[str | None, str | None]:
    meta = cfg.get("metadata") or {}
    return (
        meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point"),
        meta.get("hook_name_out") or cfg.get("hook_name_out"),
    )


def read_json_config(path: Path) -> dict:
    """A JSON object from ``path``, or a named TranscoderError (shared by the formats that keep a config.json)."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TranscoderError(f"{path}: not a readable JSON config ({exc})") from exc
    if not isinstance(cfg, dict):
        raise TranscoderError(f"{path}: holds a JSON {type(cfg).__name__}, not an object")
    return cfg


def discover(source: Source) -> dict[int, str]:
    """{layer: relative cfg.json path}."""
    files = set(source.files())
    found: dict[int, str] = {}
    for rel in sorted(files):
        folder, _, name = rel.rpartition("/")
        if name != CFG or (f"{folder}/{WEIGHTS}" if folder else WEIGHTS) not in files:
            continue
        layer = layer_of_hook(_hook_names(read_json_config(source.fetch(rel)))[0])
        if layer is None:
            m = _LAYER_IN_NAME.search(folder.rpartition("/")[2] or Path(source.location).name)
            if m is None:
                raise TranscoderError(
                    f"{source.uri(rel)}: cannot tell the layer (no block index in its "
                    f"hook_name, no layer_N in the directory name)"
                )
            layer = int(m.group(1))
        if layer in found:
            raise TranscoderError(
                f"two SAELens transcoders for layer {layer}: {source.uri(found[layer])} and {source.uri(rel)}"
            )
        found[layer] = rel
    return found


def _as_layer(sae: Any, layer: int, cfg: dict, where: str, uri: str, fmt: str) -> LayerTranscoder:
    from sae_lens import Transcoder

    if not isinstance(sae, Transcoder):
        raise TranscoderError(
            f"{where}: is a SAELens {type(sae).__name__} (architecture {cfg.get('architecture')!r}), not a transcoder"
        )
    tensors = {
        k: getattr(sae, k) for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip") if hasattr(sae, k)
    }
    check_tensors(where, {k: v.detach() for k, v in tensors.items()})
    d_hook_in, d_hook_out = default_hooks(layer)
    hook_in, hook_out = _hook_names(cfg)
    requires: tuple = ()
    hf_cfg = {**(cfg.get("metadata") or {}), **cfg}
    if hf_cfg.get("hf_hook_name"):
        # Gemma Scope 2 releases: SAELens names the input blocks.l.hook_mlp_in, which TransformerLens
        # places before ln2 (resid_mid); the HF point it was trained on is the pre-MLP norm's output.
        from atlas.transcoders.gemmascope2 import hooks_from_config

        hook_in, hook_out, requires = hooks_from_config(hf_cfg, layer, where)
    return LayerTranscoder(
        layer=layer,
        sae=sae.eval(),
        hook_in=hook_in or d_hook_in,
        hook_out=hook_out or d_hook_out,
        format=fmt,
        uri=uri,
        requires=requires,
    )


def load_layer(source: Source, rel: str, layer: int, dtype: str = "float32") -> LayerTranscoder:
    from sae_lens import SAE

    cfg_path = source.fetch(rel)
    folder = rel.rpartition("/")[0]
    source.fetch(f"{folder}/{WEIGHTS}" if folder else WEIGHTS)  # downloads the weights beside cfg.json
    cfg = read_json_config(cfg_path)
    try:
        sae = SAE.load_from_disk(cfg_path.parent, dtype=dtype)
    except Exception as exc:  # SAELens raises KeyError/ValueError/RuntimeError on malformed files
        raise TranscoderError(
            f"{cfg_path.parent}: SAELens could not load it ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    return _as_layer(sae, layer, cfg, str(cfg_path.parent), source.uri(folder or "."), NAME)


# ---- pretrained releases (hub) --------------------------------------------------------------------


def release_ids(location: str) -> tuple[str, list[str]]:
    """'RELEASE' or 'RELEASE/ID[,ID...]' -> (release, ids), checked against SAELens' directory."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, _, ids_text = location.partition("/")
    directory = get_pretrained_saes_directory()
    if release not in directory:
        known = sorted(r for r in directory if "transcoder" in r)
        raise AssetError(f"unknown SAELens release {release!r}; releases with transcoders: {', '.join(known)}")
    valid = list(directory[release].saes_map)
    ids = [i for i in ids_text.split(",") if i] if ids_text else valid
    unknown = [i for i in ids if i not in valid]
    if unknown:
        raise AssetError(f"release {release!r} has no id(s) {unknown}; e.g. {valid[:3]}")
    return release, ids


def discover_release(location: str) -> list[tuple[int | None, str]]:
    """[(layer, id)]: the layer from 'layer_N' in the id, None where only loading will tell;
    the first id listed for a layer wins."""
    _, ids = release_ids(location)
    found: list[tuple[int | None, str]] = []
    seen: set[int] = set()
    for sae_id in ids:
        m = _LAYER_IN_NAME.search(sae_id)
        layer = int(m.group(1)) if m else None
        if layer is None or layer not in seen:
            found.append((layer, sae_id))
            if layer is not None:
                seen.add(layer)
    return found


def load_release_layer(location: str, sae_id: str, layer: int | None, dtype: str = "float32") -> LayerTranscoder:
    from sae_lens import SAE

    release, _ = release_ids(location)
    where = f"SAELens release {release!r} id {sae_id!r}"
    try:
        sae, cfg, _ = SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, dtype=dtype)
    except Exception as exc:  # offline, hub errors
        raise AssetError(
            f"{where}: could not load it (offline? HF_HUB_OFFLINE set?): {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    found = layer_of_hook(_hook_names(cfg)[0])
    if layer is None:
        if found is None:
            raise TranscoderError(f"{where}: cannot tell its layer from hook {_hook_names(cfg)[0]!r}")
        layer = found
    return _as_layer(sae, layer, cfg, where, f"{release}/{sae_id}", RELEASE_NAME)


# ---- saving -------------------------------------------------------------------------------------------


def save_saelens(tc: LayerTranscoder, directory: str | Path) -> Path:
    """Write ``tc`` as a SAELens directory (cfg.json + sae_weights.safetensors), its hooks in the
    config's metadata as hook_name / hook_name_out; ``load_transcoders('saelens:...')`` reads it back."""
    directory = Path(directory)
    sae: Transcoder = tc.sae
    sae.cfg.metadata.hook_name = tc.hook_in
    sae.cfg.metadata.hook_name_out = tc.hook_out
    try:
        sae.save_model(directory)
    except OSError as exc:
        raise AssetError(f"could not write the transcoder for layer {tc.layer} to {directory}: {exc}") from exc
    return directory


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
