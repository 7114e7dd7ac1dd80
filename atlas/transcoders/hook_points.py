"""Model points that TransformerLens has no hook for, and the names other tools give model points.

TransformerLens hooks the norm *before* its gain (``ln2.hook_normalized``) and the MLP's output
*after* the post-MLP norm (``hook_mlp_out``; Gemma 2/3 apply ``ln2_post`` to the MLP output before
that hook). Two formats mean other points:

- ``blocks.{l}.mlp.hook_in``  [batch, pos, d_model]: the MLP module's actual input, i.e. ln2's
  output after its gain (and bias); the point circuit-tracer's ``mlp.hook_in`` names and Gemma
  Scope 2's ``model.layers.{l}.pre_feedforward_layernorm.output``.
- ``blocks.{l}.mlp.hook_out`` [batch, pos, d_model]: the MLP module's output, before ``ln2_post``;
  circuit-tracer's ``mlp.hook_out`` (its ReplacementMLP wraps the MLP module the same way) and
  HF's ``model.layers.{l}.mlp.output``. In models without ``ln2_post`` it equals ``hook_mlp_out``.

``add_mlp_hook_points(model)`` adds both as real ``HookPoint``s on every block's MLP module (a
forward pre-hook and a forward hook of that module; parameter names and the function computed are
unchanged) and re-registers the model's hook dictionary, so every lens reads and edits them like
any other hook. It is idempotent; ``TranscoderSet.check_against`` calls it when a set needs them.

``hf_to_tl(name)`` translates HF module names (Gemma 2/3 decoder layers, as Gemma Scope 2's
config.json writes them) to these TransformerLens names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from atlas.errors import TranscoderError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

MLP_IN = "blocks.{layer}.mlp.hook_in"  # MLP input: ln2 after gain and bias   [batch, pos, d_model]
MLP_OUT = "blocks.{layer}.mlp.hook_out"  # MLP module output, before ln2_post   [batch, pos, d_model]
_MLP_HOOK = re.compile(r"^blocks\.\d+\.mlp\.hook_(in|out)$")
_MARK = "_atlas_mlp_hook_points"

# HF module name (Gemma 2/3 decoder layer) -> TransformerLens hook inside blocks.{l}.
HF_TO_TL = {
    "pre_feedforward_layernorm.output": "mlp.hook_in",
    "mlp.input": "mlp.hook_in",
    "mlp.output": "mlp.hook_out",
    "post_feedforward_layernorm.output": "hook_mlp_out",
    "input": "hook_resid_pre",
    "output": "hook_resid_post",
}
# The module a HF point belongs to must exist in the model (a post-MLP norm only in Gemma 2/3 shapes).
HF_REQUIRES = {"pre_feedforward_layernorm.output": "ln2", "post_feedforward_layernorm.output": "ln2_post"}
_HF = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def needs_mlp_hook_points(hooks) -> bool:
    return any(_MLP_HOOK.match(h) for h in hooks)


def add_mlp_hook_points(model: HookedTransformer) -> None:
    """Give every block's MLP module the hook points ``mlp.hook_in`` / ``mlp.hook_out`` (idempotent)."""
    from transformer_lens.hook_points import HookPoint

    added = False
    for block in model.blocks:
        mlp = block.mlp
        if getattr(mlp, _MARK, False):
            continue
        mlp.hook_in, mlp.hook_out = HookPoint(), HookPoint()
        # 1. the input, as the module receives it, passes through hook_in (which may replace it)
        mlp.register_forward_pre_hook(lambda module, args: (module.hook_in(args[0]), *args[1:]))
        # 2. the module's output passes through hook_out before the block applies ln2_post
        mlp.register_forward_hook(lambda module, args, out: module.hook_out(out))
        setattr(mlp, _MARK, True)
        added = True
    if added:
        model.setup()  # rebuild hook_dict / mod_dict with the new hook points


def hf_to_tl(name: str, where: str = "config") -> str:
    """'model.layers.3.pre_feedforward_layernorm.output' -> 'blocks.3.mlp.hook_in'."""
    m = _HF.match(name or "")
    if m is None or m.group(2) not in HF_TO_TL:
        raise TranscoderError(
            f"{where}: hook point {name!r} is not one atlas can place in a TransformerLens model "
            f"(known: model.layers.{{l}}.{{{', '.join(HF_TO_TL)}}})"
        )
    return f"blocks.{m.group(1)}.{HF_TO_TL[m.group(2)]}"


def hf_required_module(name: str) -> str | None:
    """The TransformerLens module a HF point needs ('blocks.3.ln2_post'), or None."""
    m = _HF.match(name or "")
    if m is None or m.group(2) not in HF_REQUIRES:
        return None
    return f"blocks.{m.group(1)}.{HF_REQUIRES[m.group(2)]}"
