"""The registry of transcoder formats: parse ``FORMAT:LOCATION``, find one file per layer, load
each with its format's loader, and return one ``TranscoderSet`` (checked against the model when
one is given).

Specs (see docs/transcoders.md):

- ``saelens:DIR|hf://OWNER/REPO``      SAELens directories (cfg.json + sae_weights.safetensors)
- ``saelens-release:RELEASE[/ID,...]`` a SAELens pretrained release (hub)
- ``dunefsky:DIR|FILE|hf://...``       Dunefsky et al. GPT-2 .pt pickles
- ``gemmascope:DIR|hf://...``          Gemma Scope params.npz
- ``circuit-tracer:DIR|hf://...``      circuit-tracer layer_{l}.safetensors
- ``gemmascope2:DIR|hf://...``         Gemma Scope 2 layer_{l}_width_*_l0_*/params.safetensors + config.json
- ``circuit-tracer-clt:DIR``, ``gemmascope2-clt:DIR``  cross-layer transcoders (atlas/transcoders/clt.py):
  returns a ``CrossLayerTranscoder`` (always every layer; ``layers`` is not a selection here)
- ``auto:PATH`` or a bare existing PATH: the first local format whose files are found there
- ``preset:NAME`` or a bare preset NAME (``gpt2-small``, ``gemma-2-2b``)
"""

from __future__ import annotations

import types
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from atlas.errors import AssetError, TranscoderError
from atlas.transcoders import circuit_tracer, clt, dunefsky, gemmascope, gemmascope2, saelens_format
from atlas.transcoders.source import Source
from atlas.transcoders.transcoder_set import TranscoderSet

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# Formats whose files sit in a directory or hub repo: module with NAME, DEFAULT_SET_NAME,
# FILE_RULE, discover(source) -> {layer: rel}, load_layer(source, rel, layer, dtype).
FILE_FORMATS: dict[str, types.ModuleType] = {
    m.NAME: m for m in (saelens_format, dunefsky, gemmascope, circuit_tracer, gemmascope2)
}
DTYPES = ("float32", "bfloat16", "float16", "float64")
FORMATS: tuple[str, ...] = (*FILE_FORMATS, *clt.FORMATS, saelens_format.RELEASE_NAME, "auto", "preset")


GEMMA3_270M_RELEASE = "gemma-scope-2-270m-pt-transcoders-all"


@dataclass(frozen=True)
class Preset:
    name: str  # what users type: --transcoders gpt2-small
    format: str
    location: str
    set_name: str  # Neuronpedia's source-set name, so public ids match theirs
    model: str  # the model they were trained on


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # Dunefsky et al. (NeurIPS 2024), 12 layers x 24576, ReLU; Neuronpedia set 'tres-dc'.
        Preset("gpt2-small", "dunefsky", "hf://pchlenski/gpt2-transcoders", "tres-dc", "gpt2"),
        # Gemma Scope transcoders, 26 layers x 16384, JumpReLU; Neuronpedia 'gemmascope-transcoder-16k'.
        Preset(
            "gemma-2-2b", "saelens-release", "gemma-scope-2b-pt-transcoders", "gemmascope-transcoder-16k", "gemma-2-2b"
        ),
        # Gemma Scope 2 transcoders of Gemma 3 270M (the embedded default's model), 18 layers x 16384,
        # JumpReLU, the small-L0 sets without the affine skip; hub google/gemma-scope-2-270m-pt.
        Preset(
            "gemma-3-270m",
            "saelens-release",
            GEMMA3_270M_RELEASE + "/" + ",".join(f"layer_{l}_width_16k_l0_small" for l in range(18)),
            "gemmascope-2-transcoder-16k",
            "gemma-3-270m",
        ),
    )
}


@dataclass(frozen=True)
class TranscoderSpec:
    format: str
    location: str
    layers: tuple[int, ...] | None = None  # None: every layer found
    set_name: str | None = None  # None: the preset's or the format's default

    @classmethod
    def parse(cls, text: str, layers=None, set_name: str | None = None) -> TranscoderSpec:
        layers = tuple(sorted(set(int(l) for l in layers))) if layers is not None else None
        fmt, sep, location = text.partition(":")
        if not sep and text in PRESETS:
            fmt, location = "preset", text
        elif not sep or fmt not in FORMATS:
            from pathlib import Path

            if Path(text).expanduser().exists():
                fmt, location = "auto", text
            else:
                raise AssetError(
                    f"transcoder spec {text!r}: unknown format {fmt if sep else text!r}; use FORMAT:LOCATION "
                    f"with FORMAT one of {', '.join(FORMATS)}, an existing path, or a preset "
                    f"({', '.join(PRESETS)})"
                )
        if not location:
            raise AssetError(f"transcoder spec {text!r} names no location after '{fmt}:'")
        spec = cls(format=fmt, location=location, layers=layers, set_name=set_name)
        return spec.resolve_preset()

    def resolve_preset(self) -> TranscoderSpec:
        if self.format != "preset":
            return self
        if self.location not in PRESETS:
            raise AssetError(f"unknown transcoder preset {self.location!r}; known: {', '.join(PRESETS)}")
        p = PRESETS[self.location]
        return replace(self, format=p.format, location=p.location, set_name=self.set_name or p.set_name)

    def __str__(self) -> str:
        return f"{self.format}:{self.location}"


def load_transcoders(
    spec: TranscoderSpec | str,
    model: HookedTransformer | None = None,
    *,
    layers=None,
    set_name: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
) -> TranscoderSet | clt.CrossLayerTranscoder:
    """Load every requested layer of a transcoder set; with a model, also ``check_against`` it.
    ``layers`` / ``set_name`` apply when ``spec`` is a string."""
    from atlas.progress import track

    if isinstance(spec, str):
        spec = TranscoderSpec.parse(spec, layers=layers, set_name=set_name)
    spec = spec.resolve_preset()
    if dtype not in DTYPES:
        raise TranscoderError(f"transcoder dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if spec.format in clt.FORMATS:
        return clt.load_clt(spec.format, spec.location, set_name=spec.set_name, dtype=dtype, model=model)
    if spec.format == saelens_format.RELEASE_NAME:
        plan = _release_plan(spec)
        set_name = spec.set_name or spec.location.partition("/")[0]
    else:
        fmt, plan = _file_plan(spec)
        set_name = spec.set_name or FILE_FORMATS[fmt].DEFAULT_SET_NAME
    tset = TranscoderSet(set_name=set_name)
    for _layer, load in track(plan, f"loading transcoders {spec}", unit="layer"):
        tc = load(dtype)
        if tc.d_sae < 1:
            raise TranscoderError(
                f"{spec}: the transcoder of layer {tc.layer} ({tc.uri}) has d_sae = {tc.d_sae} "
                f"features; a transcoder needs at least one"
            )
        if tc.layer in tset.layers:
            raise TranscoderError(
                f"{spec}: two transcoders for layer {tc.layer} ({tset.layers[tc.layer].uri}, {tc.uri})"
            )
        if spec.layers is not None and tc.layer not in spec.layers:
            continue
        if device != "cpu":
            tc.sae.to(device)
        tset.layers[tc.layer] = tc
    if spec.layers is not None:
        missing = sorted(set(spec.layers) - set(tset.layers))
        if missing:
            raise TranscoderError(f"{spec}: no transcoder for layer(s) {missing} (found {tset.layer_ids})")
    if model is not None:
        tset.check_against(model)
    return tset


def _file_plan(spec: TranscoderSpec) -> tuple[str, list]:
    """(format, [(layer, load(dtype) -> LayerTranscoder)]) for a file format (auto: the first found)."""
    source = Source.open(spec.location)
    candidates = list(FILE_FORMATS) if spec.format == "auto" else [spec.format]
    for fmt in candidates:
        module = FILE_FORMATS[fmt]
        found = module.discover(source)
        if found:
            break
    else:
        rules = "; ".join(f"{f}: {FILE_FORMATS[f].FILE_RULE}" for f in candidates)
        raise AssetError(f"no transcoder files of a known format at {spec.location} (looked for {rules})")
    if spec.layers is not None:
        missing = sorted(set(spec.layers) - set(found))
        if missing:
            raise TranscoderError(
                f"{spec}: no transcoder file for layer(s) {missing} at {spec.location} "
                f"(found layers {sorted(found)}, rule {module.FILE_RULE})"
            )
        found = {l: found[l] for l in spec.layers}
    return fmt, [(layer, _bind(module.load_layer, source, found[layer], layer)) for layer in sorted(found)]


def _release_plan(spec: TranscoderSpec) -> list:
    found = saelens_format.discover_release(spec.location)
    if spec.layers is not None:  # ids whose layer is known only after loading are kept
        found = [(l, i) for l, i in found if l is None or l in spec.layers]
    return [(layer, _bind(saelens_format.load_release_layer, spec.location, sae_id, layer)) for layer, sae_id in found]


def _bind(fn, *args):
    return lambda dtype: fn(*args, dtype=dtype)
