"""Cross-layer transcoders (CLTs): a feature of source layer l reads the MLP input of layer l and
writes into the MLP output of every layer k >= l. Two file layouts, read layer by layer:

- ``circuit-tracer-clt:DIR`` (circuit-tracer's ``CrossLayerTranscoder.to_safetensors``): per source
  layer l, ``W_enc_{l}.safetensors`` with W_enc_{l} [F, d] (F.linear layout), b_enc_{l} [F],
  b_dec_{l} [d] (the output bias of layer l), optional threshold_{l} [F] (JumpReLU), optional
  W_skip_{l} [d, d] (added as x_l W_skip); and ``W_dec_{l}.safetensors`` with W_dec_{l}
  [F, n_layers - l, d] (slice j writes into layer l + j). Hooks from ``config.yaml``'s
  feature_input_hook / feature_output_hook (circuit-tracer's CLT default: hook_resid_mid ->
  hook_mlp_out), mapped as for its per-layer files (atlas/transcoders/circuit_tracer.py).
- ``gemmascope2-clt:DIR`` (Gemma Scope 2's JumpReLU multi-layer layout): per source layer l one
  safetensors file named ``*layer_{l}.safetensors`` (or ``layer_{l}/params.safetensors``) with
  w_enc [d, F], w_dec [F, n_layers, d] (slice k writes into layer k; slices k < l unused) or
  [F, n_layers - l, d], b_enc [F], b_dec [d] (the output bias of layer l), threshold [F], optional
  affine_skip_connection [d, d] (x_l A into layer l). Hooks: a config.json's hf_hook_point_in /
  _out (its layer index replaced by each layer) or the defaults, the pre-MLP norm's output ->
  the post-MLP norm's output (blocks.l.mlp.hook_in -> blocks.l.hook_mlp_out).

Memory: the decoders are the large part (n(n+1)/2 slices of [F, d]). Nothing but the biases and
thresholds is read at load time: each encoder, decoder slice and skip matrix is read when asked
for, from the memory-mapped safetensors file (``safe_open(...).get_slice``), and not kept.

Forward rule, for every layout:
    a_l = act(x_l W_enc[l] + b_enc[l])                        x_l at hook_in(l)   [.., d] -> [.., F]
    y_k = sum_{l <= k} a_l W_dec[l -> k] + b_dec[k] + x_k S_k   at hook_out(k)     (S_k: skip, if any)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from atlas.errors import AssetError, TranscoderError

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer

CT_NAME, GS2_NAME = "circuit-tracer-clt", "gemmascope2-clt"
FORMATS = (CT_NAME, GS2_NAME)
_CT_ENC = re.compile(r"(?:^|/)W_enc_(\d+)\.safetensors$")
_GS2_FILE = re.compile(r"(?:^|/)(?:[^/]*_)?layer_(\d+)(?:/params)?\.safetensors$")


@dataclass(frozen=True)
class LayerFiles:
    """Where source layer l's tensors are: file and key per role (None: absent)."""

    enc_file: Path
    dec_file: Path
    W_enc: str
    W_dec: str
    b_enc: str
    b_dec: str
    threshold: str | None
    skip: str | None


@dataclass
class CrossLayerTranscoder:
    set_name: str
    format: str
    uri: str
    files: dict[int, LayerFiles]  # source layer -> files (layers 0..n-1, every one)
    d_model: int
    d_sae: int
    enc_transposed: bool  # circuit-tracer: W_enc stored [F, d]
    dec_absolute: bool  # Gemma Scope 2 [F, n, d]: slice index = output layer
    hook_in_t: str  # 'blocks.{layer}.hook_resid_mid'
    hook_out_t: str  # 'blocks.{layer}.hook_mlp_out'
    b_enc: dict[int, torch.Tensor] = field(default_factory=dict)  # l -> [F]
    b_dec: dict[int, torch.Tensor] = field(default_factory=dict)  # k -> [d]
    threshold: dict[int, torch.Tensor] = field(default_factory=dict)  # l -> [F] (JumpReLU)
    dtype: str = "float32"
    requires: tuple[tuple[str, str], ...] = ()

    # ---- shape -----------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.files)

    @property
    def layer_ids(self) -> list[int]:
        return sorted(self.files)

    @property
    def activation(self) -> str:
        return "jumprelu" if self.threshold else "relu"

    @property
    def has_skip(self) -> bool:
        return self.files[0].skip is not None

    def hook_in(self, layer: int) -> str:
        return self.hook_in_t.format(layer=layer)

    def hook_out(self, layer: int) -> str:
        return self.hook_out_t.format(layer=layer)

    def __len__(self) -> int:
        return self.n_layers

    # ---- reading, one tensor at a time -----------------------------------------------------------
    def _read(self, path: Path, key: str, index=None) -> torch.Tensor:
        import torch
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            t = f.get_tensor(key) if index is None else f.get_slice(key)[index]
        return t.to(getattr(torch, self.dtype))

    def W_enc(self, layer: int) -> torch.Tensor:
        """[d, F], read from disk."""
        lf = self.files[layer]
        W = self._read(lf.enc_file, lf.W_enc)
        return W.T.contiguous() if self.enc_transposed else W

    def decoder_slice(self, src: int, out: int) -> torch.Tensor:
        """W_dec[src -> out] [F, d] for src <= out, read from disk (only that slice)."""
        if not src <= out < self.n_layers:
            raise TranscoderError(f"{self.set_name}: no decoder from layer {src} into layer {out}")
        lf = self.files[src]
        j = out if self.dec_absolute else out - src
        return self._read(lf.dec_file, lf.W_dec, (slice(None), j, slice(None)))

    def skip(self, layer: int) -> torch.Tensor | None:
        """S_layer [d, d], added as x_layer S (not transposed), or None."""
        lf = self.files[layer]
        return None if lf.skip is None else self._read(lf.enc_file, lf.skip)

    def decoder_sum(self, src: int, start: int, stop: int) -> torch.Tensor:
        """sum_{k in [start, stop)} W_dec[src -> k]  [F, d] (zeros when empty), one slice in memory at a time."""
        import torch

        total = torch.zeros(self.d_sae, self.d_model, dtype=getattr(torch, self.dtype))
        for k in range(max(start, src), stop):
            total += self.decoder_slice(src, k)
        return total

    # ---- the forward rule ------------------------------------------------------------------------
    def pre_activation(self, layer: int, x: torch.Tensor, W_enc: torch.Tensor | None = None) -> torch.Tensor:
        W = self.W_enc(layer) if W_enc is None else W_enc
        return x.to(W.dtype) @ W + self.b_enc[layer]

    def encode(self, layer: int, x: torch.Tensor, W_enc: torch.Tensor | None = None) -> torch.Tensor:
        """a_l: x [.., d] -> [.., F]."""
        import torch

        z = self.pre_activation(layer, x, W_enc)
        if layer in self.threshold:
            return z * (z > self.threshold[layer])
        return torch.relu(z)

    def reconstruct(self, out: int, acts: dict[int, torch.Tensor], x_out: torch.Tensor | None = None) -> torch.Tensor:
        """y_out = sum_{l <= out} a_l W_dec[l -> out] + b_dec[out] (+ x_out S_out): acts {l: [.., F]} -> [.., d]."""
        y = self.b_dec[out]
        for src in range(out + 1):
            if src in acts:
                y = y + acts[src] @ self.decoder_slice(src, out)
        S = self.skip(out)
        if S is not None:
            if x_out is None:
                raise TranscoderError(f"{self.set_name}: layer {out} has a skip connection; its input is needed")
            y = y + x_out @ S
        return y

    # ---- the per-layer view the lenses read ------------------------------------------------------
    def __getitem__(self, layer: int) -> CLTLayerView:
        if layer not in self.files:
            raise TranscoderError(
                f"no layer {layer} in cross-layer transcoder {self.set_name!r} (has 0..{self.n_layers - 1})"
            )
        return CLTLayerView(self, layer)

    def __iter__(self):
        return iter(CLTLayerView(self, l) for l in self.layer_ids)

    def upstream_decoders(self, layer: int, sources) -> dict[int, torch.Tensor]:
        """{l': sum_{k in [l', layer)} W_dec[l' -> k]} [F, d]: what a feature of l' has written into the
        residual stream by the time layer ``layer`` reads it (virtual weights, docs/transcoders.md)."""
        return {src: self.decoder_sum(src, src, layer) for src in sources if src < layer}

    # ---- checks ----------------------------------------------------------------------------------
    def check_against(self, model: HookedTransformer) -> None:
        from atlas.transcoders.hook_points import add_mlp_hook_points, needs_mlp_hook_points
        from atlas.transcoders.transcoder_set import check_hooks_exist

        hooks = [h for l in self.layer_ids for h in (self.hook_in(l), self.hook_out(l))]
        if needs_mlp_hook_points(hooks):
            add_mlp_hook_points(model)
        where = f"cross-layer transcoder {self.set_name!r} ({self.uri})"
        if self.n_layers != model.cfg.n_layers:
            raise TranscoderError(f"{where}: covers {self.n_layers} layers, the model has {model.cfg.n_layers}")
        check_hooks_exist(where, hooks, model)
        if self.d_model != model.cfg.d_model:
            raise TranscoderError(
                f"{where}: width {self.d_model} does not match the model's d_model {model.cfg.d_model}"
            )
        for point, module in self.requires:
            if module not in model.mod_dict:
                raise TranscoderError(
                    f"{where}: hook point {point!r} needs the model's {module!r}, which this model does not have"
                )


_VIEW_CACHE: dict = {}  # one view's SAELens object at a time: (id(clt), layer) -> sae


@dataclass
class CLTLayerView:
    """Source layer l of a CLT, in the interface of a LayerTranscoder: its encoder, and as decoder the sum
    of its slices into every layer k >= l (what the feature writes in all: output projections). Its
    SAELens object is built on first use; one at a time is kept."""

    clt: CrossLayerTranscoder
    layer: int

    format = property(lambda self: self.clt.format)
    uri = property(lambda self: f"{self.clt.uri}#layer_{self.layer}")
    hook_in = property(lambda self: self.clt.hook_in(self.layer))
    hook_out = property(lambda self: self.clt.hook_out(self.layer))
    activation = property(lambda self: self.clt.activation)
    has_skip = False  # a CLT's skip belongs to the output layer's reconstruction, not to a feature
    d_in = property(lambda self: self.clt.d_model)
    d_out = property(lambda self: self.clt.d_model)
    d_sae = property(lambda self: self.clt.d_sae)
    dtype = property(lambda self: self.clt.dtype)
    requires = property(lambda self: self.clt.requires)

    @property
    def sae(self):
        key = (id(self.clt), self.layer)
        if key not in _VIEW_CACHE:
            from atlas.transcoders.build import build_sae

            _VIEW_CACHE.clear()
            c, l = self.clt, self.layer
            _VIEW_CACHE[key] = build_sae(
                f"{c.uri} layer {l}",
                W_enc=c.W_enc(l),
                b_enc=c.b_enc[l],
                W_dec=c.decoder_sum(l, l, c.n_layers),
                b_dec=c.b_dec[l],
                threshold=c.threshold.get(l),
                hook_in=self.hook_in,
                hook_out=self.hook_out,
                dtype=c.dtype,
            )
        return _VIEW_CACHE[key]

    # the encoder side is read directly (no decoder slice is touched); W_dec builds the summed decoder
    W_enc = property(lambda self: self.clt.W_enc(self.layer))  # [d, F]
    b_enc = property(lambda self: self.clt.b_enc[self.layer])  # [F]
    threshold = property(lambda self: self.clt.threshold.get(self.layer))
    W_dec = property(lambda self: self.sae.W_dec)  # [F, d]: sum of the slices into layers >= l
    b_dec = property(lambda self: self.clt.b_dec[self.layer])

    def encode(self, x):
        return self.clt.encode(self.layer, x)

    def pre_activation(self, x):
        return self.clt.pre_activation(self.layer, x)


# ---- loading ------------------------------------------------------------------------------------------


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} from a safetensors header (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TranscoderError(f"{path}: not a readable safetensors file ({exc})") from exc


def _contiguous_layers(found: dict[int, object], what: str, where: str, rule: str) -> None:
    if not found:
        raise AssetError(f"no cross-layer transcoder files at {where} (looked for {rule})")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise TranscoderError(
            f"{where}: cross-layer transcoder is missing the {what} of layer(s) {missing} "
            f"(found layers {sorted(found)}; every layer 0..{max(found)} needs one, {rule})"
        )


def _expect(path: Path, key: str, shape: tuple, want: tuple, layout: str) -> None:
    if tuple(shape) != tuple(want):
        raise TranscoderError(f"{path}: {key} has shape {tuple(shape)}, expected {tuple(want)} ({layout})")


def load_clt(
    fmt: str,
    location: str,
    *,
    set_name: str | None = None,
    dtype: str = "float32",
    model: HookedTransformer | None = None,
) -> CrossLayerTranscoder:
    """Read a CLT's layout and biases (not its weights); with a model, check it against the model."""
    from atlas.transcoders.source import Source

    source = Source.open(location)  # a hub repo: each layer's files are downloaded when first read
    clt = (_load_ct if fmt == CT_NAME else _load_gs2)(source, set_name, dtype)
    if model is not None:
        clt.check_against(model)
    return clt


def _set_uri(source) -> str:
    """Where the set lives: its directory, or hf://OWNER/REPO[/FOLDER] for a hub repo."""
    return source.uri("").rstrip("/") if source.is_hub else str(source.root)


def _ct_decoder_files(source, enc: dict[int, str], rule: str) -> dict[int, str]:
    """Each layer's W_dec_{l}.safetensors, beside its encoder file; every one must exist."""
    dec = {l: f"{enc[l].rpartition('/')[0] + '/' if '/' in enc[l] else ''}W_dec_{l}.safetensors" for l in enc}
    missing = [l for l, rel in dec.items() if not source.has(rel)]
    if missing:
        raise TranscoderError(
            f"{source.location}: cross-layer transcoder is missing the decoder file(s) "
            f"{[dec[l] for l in missing]} of layer(s) {missing} ({rule})"
        )
    return dec


def _ct_keys(ep: Path, dp: Path, h: dict, hd: dict, l: int) -> None:
    """Layer l's encoder file ``ep`` (header ``h``) and decoder file ``dp`` (``hd``) hold the required keys."""
    for key in (f"W_enc_{l}", f"b_enc_{l}", f"b_dec_{l}"):
        if key not in h:
            raise TranscoderError(
                f"{ep}: missing key {key!r} (has {sorted(h)}); circuit-tracer CLT layout: "
                f"W_enc_{{l}} [F, d], b_enc_{{l}} [F], b_dec_{{l}} [d], optional threshold_{{l}}, W_skip_{{l}}"
            )
    if f"W_dec_{l}" not in hd:
        raise TranscoderError(f"{dp}: missing key 'W_dec_{l}' (has {sorted(hd)})")


def _ct_dims(ep: Path, h: dict) -> tuple[int, int]:
    """(d_sae, d_model) from layer 0's W_enc_0 [F, d]."""
    if len(h["W_enc_0"]) != 2:
        raise TranscoderError(f"{ep}: W_enc_0 has shape {h['W_enc_0']}, expected [F, d]")
    d_sae, d_model = h["W_enc_0"]
    return d_sae, d_model


def _ct_layer(ep: Path, dp: Path, h: dict, hd: dict, l: int, n: int, d_sae: int, d_model: int) -> LayerFiles:
    """Layer l's files, its shapes checked: W_enc_l [F, d], b_enc_l [F], b_dec_l [d], W_dec_l [F, n - l, d],
    threshold_l [F] and W_skip_l [d, d] when present."""
    layout = f"from W_enc_0 [F={d_sae}, d={d_model}] and {n} layers"
    _expect(ep, f"W_enc_{l}", h[f"W_enc_{l}"], (d_sae, d_model), layout)
    _expect(ep, f"b_enc_{l}", h[f"b_enc_{l}"], (d_sae,), layout)
    _expect(ep, f"b_dec_{l}", h[f"b_dec_{l}"], (d_model,), layout)
    _expect(dp, f"W_dec_{l}", hd[f"W_dec_{l}"], (d_sae, n - l, d_model), layout)
    thr, skip = f"threshold_{l}", f"W_skip_{l}"
    if thr in h:
        _expect(ep, thr, h[thr], (d_sae,), layout)
    if skip in h:
        _expect(ep, skip, h[skip], (d_model, d_model), layout)
    return LayerFiles(
        ep,
        dp,
        f"W_enc_{l}",
        f"W_dec_{l}",
        f"b_enc_{l}",
        f"b_dec_{l}",
        thr if thr in h else None,
        skip if skip in h else None,
    )


def _load_ct(source, set_name, dtype) -> CrossLayerTranscoder:
    from atlas.transcoders import circuit_tracer

    rule = "W_enc_{l}.safetensors + W_dec_{l}.safetensors"
    enc = source.files_by_layer(_CT_ENC)
    _contiguous_layers(enc, "encoder file W_enc_{l}.safetensors", source.location, rule)
    n = max(enc) + 1
    dec = _ct_decoder_files(source, enc, rule)
    files: dict[int, LayerFiles] = {}
    dims: tuple[int, int] | None = None  # (d_sae, d_model), read from layer 0
    for l in range(n):
        ep, dp = source.fetch(enc[l]), source.fetch(dec[l])
        h, hd = _header(ep), _header(dp)
        _ct_keys(ep, dp, h, hd, l)
        if dims is None:
            dims = _ct_dims(ep, h)
        files[l] = _ct_layer(ep, dp, h, hd, l, n, *dims)
    _same_options(files, source.location)
    assert dims is not None  # read from layer 0 (n >= 1)
    d_sae, d_model = dims
    cfg_rel = f"{enc[0].rpartition('/')[0]}/config.yaml".lstrip("/")
    hook_in, hook_out = circuit_tracer.hooks_from_yaml(source, cfg_rel, ("hook_resid_mid", "hook_mlp_out"))
    clt = CrossLayerTranscoder(
        set_name or "circuit-tracer-clt",
        CT_NAME,
        _set_uri(source),
        files,
        d_model,
        d_sae,
        enc_transposed=True,
        dec_absolute=False,
        hook_in_t=hook_in,
        hook_out_t=hook_out,
        dtype=dtype,
    )
    _read_small(clt)
    return clt


def _gs2_keys(p: Path, h: dict) -> None:
    """A Gemma Scope 2 layer file (header ``h``) holds the required keys."""
    missing = [k for k in ("w_enc", "w_dec", "b_enc", "b_dec", "threshold") if k not in h]
    if missing:
        raise TranscoderError(
            f"{p}: missing key(s) {missing} (has {sorted(h)}); Gemma Scope 2 CLT layout: "
            f"w_enc [d, F], w_dec [F, n_layers, d], b_enc [F], b_dec [d], threshold [F], "
            f"optional affine_skip_connection [d, d]"
        )


def _gs2_dims(p: Path, h: dict) -> tuple[int, int]:
    """(d_model, d_sae) from layer 0's w_enc [d, F]."""
    if len(h["w_enc"]) != 2:
        raise TranscoderError(f"{p}: w_enc has shape {h['w_enc']}, expected [d, F]")
    d_model, d_sae = h["w_enc"]
    return d_model, d_sae


def _gs2_layer(p: Path, h: dict, l: int, n: int, d_model: int, d_sae: int) -> LayerFiles:
    """Layer l's file, its shapes checked: w_enc [d, F], b_enc [F], b_dec [d], threshold [F],
    w_dec [F, n, d] (absolute) or [F, n - l, d] (later layers only), affine_skip_connection [d, d] if present."""
    layout = f"from layer 0's w_enc [d={d_model}, F={d_sae}] and {n} layers"
    _expect(p, "w_enc", h["w_enc"], (d_model, d_sae), layout)
    _expect(p, "b_enc", h["b_enc"], (d_sae,), layout)
    _expect(p, "b_dec", h["b_dec"], (d_model,), layout)
    _expect(p, "threshold", h["threshold"], (d_sae,), layout)
    if h["w_dec"] not in ((d_sae, n, d_model), (d_sae, n - l, d_model)):
        raise TranscoderError(
            f"{p}: w_dec has shape {h['w_dec']}, expected {(d_sae, n, d_model)} "
            f"(or {(d_sae, n - l, d_model)}) ({layout})"
        )
    if "affine_skip_connection" in h:
        _expect(p, "affine_skip_connection", h["affine_skip_connection"], (d_model, d_model), layout)
    return LayerFiles(
        p,
        p,
        "w_enc",
        "w_dec",
        "b_enc",
        "b_dec",
        "threshold",
        "affine_skip_connection" if "affine_skip_connection" in h else None,
    )


class _Gs2Hooks(NamedTuple):
    """The hook points of a Gemma Scope 2 CLT, from its config.json (hooks_from_config's defaults without)."""

    hook_in_t: str  # TransformerLens hook point read, with {layer}
    hook_out_t: str  # TransformerLens hook point written, with {layer}
    requires: tuple[tuple[str, str], ...]  # (HF hook point, module) the model must have, over every layer


def _gs2_hooks(source, first: str, n: int) -> _Gs2Hooks:
    """The hooks of every layer 0..n-1; ``first``: layer 0's file, beside which config.json may lie."""
    from atlas.transcoders.gemmascope2 import hooks_from_config

    cfg = {}
    cfg_rel = f"{first.rpartition('/')[0]}/config.json".lstrip("/")
    if source.has(cfg_rel):
        from atlas.transcoders.gemmascope2 import read_config

        cfg = read_config(source, cfg_rel)
    templ = {
        k: re.sub(r"^model\.layers\.\d+\.", "model.layers.{layer}.", cfg[k])
        for k in ("hf_hook_point_in", "hf_hook_point_out")
        if isinstance(cfg.get(k), str)
    }
    requires: list[tuple[str, str]] = []  # (HF hook point, module) the model must have, over every layer
    for l in range(n):
        per = {k: v.format(layer=l) for k, v in templ.items()}
        hook_in, hook_out, req = hooks_from_config(per, l, source.uri(cfg_rel) if cfg else source.location)
        requires += req
    return _Gs2Hooks(
        re.sub(r"^blocks\.\d+\.", "blocks.{layer}.", hook_in),
        re.sub(r"^blocks\.\d+\.", "blocks.{layer}.", hook_out),
        tuple(requires),
    )


def _load_gs2(source, set_name, dtype) -> CrossLayerTranscoder:
    rule = "*layer_{l}.safetensors or layer_{l}/params.safetensors with w_enc, w_dec [F, n_layers, d], ..."
    found = source.files_by_layer(_GS2_FILE)
    _contiguous_layers(found, "file", source.location, rule)
    n = max(found) + 1
    files: dict[int, LayerFiles] = {}
    dims: tuple[int, int] | None = None  # (d_model, d_sae), read from layer 0
    for l in range(n):
        p = source.fetch(found[l])
        h = _header(p)
        _gs2_keys(p, h)
        if dims is None:
            dims = _gs2_dims(p, h)
        files[l] = _gs2_layer(p, h, l, n, *dims)
    absolute = {_header(files[l].dec_file)["w_dec"][1] == n for l in range(1, n)} or {True}
    if len(absolute) != 1:
        raise TranscoderError(f"{source.location}: some layers' w_dec cover every layer, others only the later ones")
    _same_options(files, source.location)
    assert dims is not None  # read from layer 0 (n >= 1)
    d_model, d_sae = dims
    hooks = _gs2_hooks(source, found[0], n)
    clt = CrossLayerTranscoder(
        set_name or "gemmascope-2-clt",
        GS2_NAME,
        _set_uri(source),
        files,
        d_model,
        d_sae,
        enc_transposed=False,
        dec_absolute=absolute.pop(),
        hook_in_t=hooks.hook_in_t,
        hook_out_t=hooks.hook_out_t,
        dtype=dtype,
        requires=hooks.requires,
    )
    _read_small(clt)
    return clt


def _same_options(files: dict[int, LayerFiles], where: str) -> None:
    for what in ("threshold", "skip"):
        has = {l for l, f in files.items() if getattr(f, what) is not None}
        if has and len(has) != len(files):
            raise TranscoderError(
                f"{where}: layer(s) {sorted(set(files) - has)} have no {what}, layer(s) "
                f"{sorted(has)} do: all layers or none"
            )


def _read_small(clt: CrossLayerTranscoder) -> None:
    """Biases and thresholds (n x F floats) in memory; checked finite."""
    from atlas.transcoders.transcoder_set import all_finite

    for l, lf in clt.files.items():
        clt.b_enc[l] = clt._read(lf.enc_file, lf.b_enc)
        clt.b_dec[l] = clt._read(lf.enc_file, lf.b_dec)
        if lf.threshold is not None:
            clt.threshold[l] = clt._read(lf.enc_file, lf.threshold)
        for key, t in (("b_enc", clt.b_enc[l]), ("b_dec", clt.b_dec[l]), ("threshold", clt.threshold.get(l))):
            if t is not None and not all_finite(t):
                raise TranscoderError(f"{lf.enc_file}: {key} of layer {l} holds NaN or infinite values")


# ---- writing (tests, benchmarks, export) -----------------------------------------------------------------


def write_clt(fmt: str, root, tensors: dict[int, dict], config: dict | None = None) -> Path:
    """Write a CLT in ``fmt``'s layout from per-layer tensors in that layout (see the module doc):
    circuit-tracer {l: {W_enc [F, d], b_enc, b_dec, W_dec [F, n - l, d], threshold?, W_skip?}};
    Gemma Scope 2 {l: {w_enc [d, F], w_dec [F, n, d], b_enc, b_dec, threshold, affine_skip_connection?}}
    -> ``{root}/layer_{l}.safetensors``. ``config``: config.yaml (circuit-tracer) / config.json."""
    import json

    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for l, t in tensors.items():
        t = {k: v.detach().contiguous() for k, v in t.items()}
        if fmt == CT_NAME:
            save_file({f"{k}_{l}": v for k, v in t.items() if k != "W_dec"}, root / f"W_enc_{l}.safetensors")
            save_file({f"W_dec_{l}": t["W_dec"]}, root / f"W_dec_{l}.safetensors")
        elif fmt == GS2_NAME:
            save_file(t, root / f"layer_{l}.safetensors")
        else:
            raise ValueError(f"cannot write CLT format {fmt!r}; writable: {', '.join(FORMATS)}")
    if config is not None:
        if fmt == CT_NAME:
            import yaml

            (root / "config.yaml").write_text(yaml.safe_dump(config))
        else:
            (root / "config.json").write_text(json.dumps(config))
    return root
