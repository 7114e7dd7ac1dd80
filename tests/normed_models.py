"""Small TransformerLens models whose norms are not the identity: random gains around 1 and non-zero
biases (LayerNorm), also on ln2_post in the Gemma-3-shaped model. Random initialisation leaves gains
at 1 and biases at 0, under which "before the gain" and "after the gain" read the same values; these
models tell them apart. Plus an independent forward of the MLP's input and output, written from the
norm's definition (not from atlas's hook points)."""

from __future__ import annotations

import torch

SHAPES = {
    "ln": dict(
        n_layers=3,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=300,
        n_ctx=128,
        act_fn="gelu_new",
        normalization_type="LN",
    ),
    "gemma3": dict(
        n_layers=3,
        d_model=32,
        d_head=8,
        n_heads=4,
        n_key_value_heads=2,
        d_mlp=64,
        d_vocab=300,
        n_ctx=32,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        use_normalization_before_and_after=True,
        original_architecture="Gemma3ForCausalLM",
    ),
}
NORMS = ("ln1", "ln2", "ln1_post", "ln2_post", "ln_final")


def normed_model(kind: str, seed: int = 0):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**SHAPES[kind], seed=seed)).eval()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in NORMS:
                if parts[-1] == "w":
                    p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
                elif parts[-1] == "b":
                    p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def reference_mlp_points(model, tokens: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(resid_mid, MLP input = ln2(resid_mid) with gain and bias, MLP module output before ln2_post),
    each [batch, pos, d_model], computed by hand from hook_resid_mid and the norm's parameters."""
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_mid")
    r = cache[f"blocks.{layer}.hook_resid_mid"].double()
    ln2 = model.blocks[layer].ln2
    eps = model.cfg.eps
    if model.cfg.normalization_type == "LN":
        c = r - r.mean(-1, keepdim=True)
        x = c / (c.pow(2).mean(-1, keepdim=True) + eps).sqrt() * ln2.w.double() + ln2.b.double()
    else:
        x = r / (r.pow(2).mean(-1, keepdim=True) + eps).sqrt() * ln2.w.double()
    mlp = model.blocks[layer].mlp
    W_in, b_in, W_out, b_out = (t.detach().double() for t in (mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out))
    if model.cfg.gated_mlp:
        h = torch.nn.functional.gelu(x @ mlp.W_gate.detach().double(), approximate="tanh") * (x @ W_in + b_in)
    else:
        h = torch.nn.functional.gelu(x @ W_in + b_in, approximate="tanh")
    y = h @ W_out + b_out
    return r.float(), x.float(), y.float()
