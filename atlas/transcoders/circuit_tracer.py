"""circuit-tracer per-layer transcoders (e.g. hub ``mntss/skip-transcoder-Llama-3.2-1B-131k-nobos``):
one ``layer_{l}.safetensors`` per layer, keys W_enc [F, d] (stored transposed: circuit-tracer
encodes with F.linear), W_dec [F, d], b_enc [F], b_dec [d], optional W_skip [d, d], optional
threshold [F] (JumpReLU). docs/method.md §1.

1. Discover ``layer_{l}.safetensors``.
2. Read the tensors; W_enc is transposed to SAELens' [d, F].
3. Forward rule: z = x W_encᵀ(stored) + b_enc, a = act(z), y = a W_dec + b_dec + x W_skipᵀ.
   SAELens' SkipTranscoder adds x W_skipᵀ with W_skip [d_out, d_in]: the same matrix, copied as is.
4. Hooks: circuit-tracer names them ``feature_input_hook`` / ``feature_output_hook`` in the
   repository's ``config.yaml`` (default ``hook_resid_mid`` -> ``mlp.hook_out``), relative to
   ``blocks.{l}`` of its ReplacementModel, whose ReplacementMLP wraps the MLP module with
   ``hook_in`` / ``hook_out``. So ``mlp.hook_in`` is the MLP's actual input (after ln2's gain and
   bias) and ``mlp.hook_out`` the MLP module's output (before ln2_post in Gemma 2/3): atlas's
   hook points of the same names (atlas/transcoders/hook_points.py), not ln2.hook_normalized /
   hook_mlp_out. Every other name is a TransformerLens hook, kept as it is.
"""

from __future__ import annotations

import re

from atlas.errors import TranscoderError
from atlas.transcoders.build import build_layer
from atlas.transcoders.source import Source
from atlas.transcoders.transcoder_set import LayerTranscoder

NAME = "circuit-tracer"
DEFAULT_SET_NAME = "circuit-tracer-transcoder"
FILE_RULE = "layer_{l}.safetensors"
_FILE = re.compile(r"(?:^|/)layer_(\d+)\.safetensors$")
# circuit-tracer's hook names (as in its config.yaml) -> TransformerLens names inside blocks.{l}.
HOOK_NAMES = {
    "hook_resid_mid": "hook_resid_mid",
    "mlp.hook_out": "mlp.hook_out",
    "hook_mlp_out": "hook_mlp_out",
    "mlp.hook_in": "mlp.hook_in",
    "ln2.hook_normalized": "ln2.hook_normalized",
}
DEFAULT_HOOKS = ("hook_resid_mid", "mlp.hook_out")


def discover(source: Source) -> dict[int, str]:
    return source.files_by_layer(_FILE)


def hooks_from_yaml(source: Source, cfg_rel: str, defaults: tuple[str, str] = DEFAULT_HOOKS) -> tuple[str, str]:
    """('blocks.{layer}.IN', 'blocks.{layer}.OUT') from config.yaml's feature_input_hook /
    feature_output_hook (``defaults`` where absent)."""
    hook_in, hook_out = defaults
    if source.has(cfg_rel):
        import yaml

        try:
            cfg = yaml.safe_load(source.fetch(cfg_rel).read_text()) or {}
        except yaml.YAMLError as exc:
            raise TranscoderError(f"{source.uri(cfg_rel)}: not valid YAML ({exc})") from exc
        hook_in = cfg.get("feature_input_hook", hook_in) if isinstance(cfg, dict) else hook_in
        hook_out = cfg.get("feature_output_hook", hook_out) if isinstance(cfg, dict) else hook_out
    for hook in (hook_in, hook_out):
        if hook not in HOOK_NAMES:
            raise TranscoderError(
                f"{source.uri(cfg_rel)}: unknown circuit-tracer hook {hook!r} (known: {', '.join(HOOK_NAMES)})"
            )
    return f"blocks.{{layer}}.{HOOK_NAMES[hook_in]}", f"blocks.{{layer}}.{HOOK_NAMES[hook_out]}"


def _hooks(source: Source, rel: str, layer: int) -> tuple[str, str]:
    hook_in, hook_out = hooks_from_yaml(source, f"{rel.rpartition('/')[0]}/config.yaml".lstrip("/"))
    return hook_in.format(layer=layer), hook_out.format(layer=layer)


def load_layer(source: Source, rel: str, layer: int, dtype: str = "float32") -> LayerTranscoder:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = source.fetch(rel)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise TranscoderError(f"{path}: not a readable safetensors file ({exc})") from exc
    tensors = {k.removeprefix("activation_function."): v for k, v in tensors.items()}
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in tensors]
    if missing:
        raise TranscoderError(
            f"{path}: missing key(s) {missing} (has {sorted(tensors)}); circuit-tracer layout is "
            f"W_enc [F, d], W_dec [F, d], b_enc [F], b_dec [d], optional W_skip [d, d], threshold [F]"
        )
    if tensors["W_enc"].ndim != 2:
        raise TranscoderError(f"{path}: W_enc has shape {tuple(tensors['W_enc'].shape)}, expected [F, d]")
    hook_in, hook_out = _hooks(source, rel, layer)
    return build_layer(
        str(path),
        layer,
        hook_in=hook_in,
        hook_out=hook_out,
        format=NAME,
        uri=source.uri(rel),
        W_enc=tensors["W_enc"].T,
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        threshold=tensors.get("threshold"),
        W_skip=tensors.get("W_skip"),
        dtype=dtype,
    )
