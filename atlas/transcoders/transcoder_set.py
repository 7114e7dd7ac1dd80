"""The one in-memory form of transcoders: SAELens transcoder objects, one per layer, with the
TransformerLens hooks each reads and writes.

Every loader (one module per file format in this package) returns a ``TranscoderSet``; the lenses
read only this form. ``check_against(model)`` verifies hooks and shapes before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from atlas.errors import TranscoderError

if TYPE_CHECKING:
    import torch
    from sae_lens import Transcoder
    from transformer_lens import HookedTransformer

Activation = Literal["relu", "jumprelu", "topk"]


def check_hooks_exist(where: str, hooks, model: HookedTransformer) -> None:
    """Raise TranscoderError naming the first of ``hooks`` the model has no hook point for."""
    for hook in hooks:
        if hook not in model.hook_dict:
            raise TranscoderError(f"{where}: hook {hook!r} does not exist in the model")


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf in ``tensor``. A finite sum proves it (NaN and inf propagate through a sum) and
    costs a tenth of an elementwise check; only an overflowing sum falls back to that check."""
    import torch

    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


@dataclass
class LayerTranscoder:
    layer: int
    sae: Transcoder  # sae_lens Transcoder / SkipTranscoder / JumpReLU(Skip)Transcoder
    hook_in: str  # e.g. 'blocks.3.ln2.hook_normalized'   [batch, pos, d_in]
    hook_out: str  # e.g. 'blocks.3.hook_mlp_out'          [batch, pos, d_out]
    format: str  # the loader that read it, e.g. 'dunefsky-pt'
    uri: str  # file, directory or 'release/id'
    requires: tuple[tuple[str, str], ...] = ()  # (point as the file names it, module the model must have)

    @property
    def activation(self) -> Activation:
        from sae_lens import JumpReLUTranscoder

        return "jumprelu" if isinstance(self.sae, JumpReLUTranscoder) else "relu"

    @property
    def has_skip(self) -> bool:
        return hasattr(self.sae, "W_skip")

    @property
    def W_enc(self) -> torch.Tensor:  # [d_in, d_sae]
        return self.sae.W_enc

    @property
    def b_enc(self) -> torch.Tensor:  # [d_sae]
        return self.sae.b_enc

    @property
    def W_dec(self) -> torch.Tensor:  # [d_sae, d_out]
        return self.sae.W_dec

    @property
    def b_dec(self) -> torch.Tensor:  # [d_out]  (the output bias)
        return self.sae.b_dec

    @property
    def threshold(self) -> torch.Tensor | None:  # [d_sae], JumpReLU only
        return getattr(self.sae, "threshold", None)

    @property
    def d_in(self) -> int:
        return int(self.sae.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.sae.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.sae.W_dec.shape[1])

    @property
    def dtype(self) -> str:
        return str(self.sae.W_enc.dtype).removeprefix("torch.")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations: x [..., d_in] -> [..., d_sae]."""
        return self.sae.encode(x)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """z = x W_enc + b_enc: x [..., d_in] -> [..., d_sae]."""
        return x.to(self.sae.W_enc.dtype) @ self.sae.W_enc + self.sae.b_enc


@dataclass
class TranscoderSet:
    set_name: str  # e.g. 'tres-dc', 'gemmascope-transcoder-16k'
    layers: dict[int, LayerTranscoder] = field(default_factory=dict)

    def __getitem__(self, layer: int) -> LayerTranscoder:
        if layer not in self.layers:
            raise TranscoderError(
                f"no transcoder for layer {layer} in set {self.set_name!r} (has {sorted(self.layers)})"
            )
        return self.layers[layer]

    def __iter__(self):
        return iter(self.layers[l] for l in sorted(self.layers))

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def layer_ids(self) -> list[int]:
        return sorted(self.layers)

    def upstream_decoders(self, layer: int, sources) -> dict[int, torch.Tensor]:
        """{l': W_dec of l'} [F, d] for the source layers l' < layer (a CLT sums its slices instead)."""
        return {l: self[l].W_dec.detach() for l in sources if l < layer}

    def check_against(self, model: HookedTransformer) -> None:
        """Raise TranscoderError unless every transcoder reads and writes hooks the model has, with
        matching widths, and holds only finite weights. Adds the MLP hook points
        (``blocks.l.mlp.hook_in`` / ``hook_out``, atlas/transcoders/hook_points.py) when the set reads
        or writes them."""
        from atlas.transcoders.hook_points import add_mlp_hook_points, needs_mlp_hook_points

        if needs_mlp_hook_points(h for tc in self for h in (tc.hook_in, tc.hook_out)):
            add_mlp_hook_points(model)

        for tc in self:
            where = f"transcoder {self.set_name!r} layer {tc.layer} ({tc.uri})"
            if not 0 <= tc.layer < model.cfg.n_layers:
                raise TranscoderError(f"{where}: the model has layers 0..{model.cfg.n_layers - 1}")
            check_hooks_exist(where, (tc.hook_in, tc.hook_out), model)
            for name, width in (("input", tc.d_in), ("output", tc.d_out)):
                if width != model.cfg.d_model:
                    raise TranscoderError(
                        f"{where}: {name} width {width} does not match the model's d_model {model.cfg.d_model}"
                    )
            for point, module in tc.requires:
                if module not in model.mod_dict:
                    raise TranscoderError(
                        f"{where}: hook point {point!r} needs the model's {module!r}, which this "
                        f"model does not have (a {model.cfg.original_architecture or 'model'} "
                        f"with normalization {model.cfg.normalization_type})"
                    )
            for pname, param in tc.sae.named_parameters():
                if not all_finite(param):
                    raise TranscoderError(f"{where}: parameter {pname} holds NaN or infinite values")
