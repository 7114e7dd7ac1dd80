"""CircuitLens attribution (docs/method.md §4.2-§4.3): completeness, the head view, and the output side
checked by intervention, on a real (random-weight) TransformerLens model with SAELens transcoders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from atlas.lens.attribution import attribute, completeness_gap
from atlas.lens.kinds import KIND_LABELS, KIND_SIDES, AttributionKind


def _reference_z(model, tset, tokens, layer, feature, pos):
    """The feature's pre-activation from a plain forward pass (no hooks that change anything)."""
    _, cache = model.run_with_cache(tokens, names_filter=tset[layer].hook_in)
    x = cache[tset[layer].hook_in][torch.arange(tokens.shape[0]), pos]
    return tset[layer].pre_activation(x).detach()[torch.arange(tokens.shape[0]), feature]


@pytest.mark.parametrize("kind", ["relu", "jumprelu", "skip", "jumprelu-skip"])
def test_contributions_plus_biases_plus_errors_equal_the_pre_activation(tiny_model, make_transcoders, kind):
    tset = make_transcoders(tiny_model, d_sae=48, kind=kind, seed=1)
    gen = torch.Generator().manual_seed(0)
    B, T = 24, 16
    tokens = torch.randint(0, 50000, (B, T), generator=gen)
    for layer in (0, 1):
        feature = torch.randint(0, 48, (B,), generator=gen)
        pos = torch.randint(0, T, (B,), generator=gen)
        att = attribute(tiny_model, tset, tokens, layer, feature, pos)
        z_ref = _reference_z(tiny_model, tset, tokens, layer, feature, pos)
        torch.testing.assert_close(att.z, z_ref, atol=1e-5, rtol=1e-5)
        scale = att.z.abs().max().item() + 1
        assert completeness_gap(att).abs().max().item() < 1e-4 * scale
        # a real decomposition: the parts are not trivially zero, and upstream features matter at layer 1
        assert att.token.abs().sum() > 0 and att.bias.abs().sum() > 0
        if layer == 1:
            assert sum(c.abs().sum() for c in att.features.values()) > 0
            assert att.errors.abs().sum() > 0
        # causality: nothing after the target position contributes
        after = torch.arange(T)[None, :] > pos[:, None]
        assert att.token[after].abs().max() == 0


def test_completeness_holds_at_jumprelu_thresholds(tiny_model, make_transcoders):
    """Upstream features sitting exactly at their threshold (active and just inactive) and targets on
    either side of theirs: the activations are leaves, so the identity still holds."""
    tset = make_transcoders(tiny_model, d_sae=32, kind="jumprelu", seed=3)
    tokens = torch.randint(0, 50000, (8, 12), generator=torch.Generator().manual_seed(1))
    _, cache = tiny_model.run_with_cache(tokens, names_filter=tset[0].hook_in)
    z0 = tset[0].pre_activation(cache[tset[0].hook_in]).detach()  # [b, pos, d_sae]
    with torch.no_grad():  # put layer-0 thresholds on observed pre-activations
        tset[0].sae.threshold.copy_(z0[0, 5].clamp(min=1e-3))
    acts = tset[0].encode(cache[tset[0].hook_in]).detach()
    assert (acts[0, 5] == 0).sum() > 0  # z == threshold is inactive (strict >)
    pos = torch.full((8,), 11)
    att = attribute(tiny_model, tset, tokens, 1, torch.arange(8), pos)
    assert completeness_gap(att).abs().max().item() < 1e-4 * (att.z.abs().max().item() + 1)
    theta = tset[1].threshold[torch.arange(8)]
    assert ((att.z > theta) == (att.act > 0)).all()


def test_completeness_with_a_layer_without_transcoder(tiny_model, make_transcoders):
    tset = make_transcoders(tiny_model, kind="relu", layers=[1])  # layer 0's MLP is one error term
    tokens = torch.randint(0, 50000, (6, 10), generator=torch.Generator().manual_seed(2))
    att = attribute(tiny_model, tset, tokens, 1, torch.arange(6), torch.arange(6) + 3)
    assert att.features == {}
    assert att.errors[:, 0].abs().sum() > 0
    assert completeness_gap(att).abs().max().item() < 1e-4 * (att.z.abs().max().item() + 1)


def test_head_view_sums_to_each_layers_attention_effect(tiny_model, make_transcoders):
    tset = make_transcoders(tiny_model, seed=4)
    tokens = torch.randint(0, 50000, (5, 9), generator=torch.Generator().manual_seed(3))
    pos = torch.tensor([8, 4, 0, 6, 2])
    att = attribute(tiny_model, tset, tokens, 1, torch.arange(5), pos)
    torch.testing.assert_close(att.heads.sum((2, 3)), att.head_totals, atol=1e-5, rtol=1e-4)
    later = torch.arange(9)[None, None, None, :] > pos[:, None, None, None]
    assert att.heads.masked_select(later).abs().max() == 0  # causal: no source after the target


def test_output_side_matches_an_intervention(tiny_model, make_transcoders):
    """Adding delta * f_dec at (layer 1, t), with the final norm's scale held at its observed value
    (the frozen-norm convention), moves the predicted token's logit by delta * value / a."""
    tset = make_transcoders(tiny_model, seed=5)
    tokens = torch.randint(0, 50000, (4, 8), generator=torch.Generator().manual_seed(4))
    pos, feature = torch.tensor([7, 3, 5, 2]), torch.tensor([0, 1, 2, 3])
    att = attribute(tiny_model, tset, tokens, 1, feature, pos, n_output=2)
    ar = torch.arange(4)
    y = att.out_tokens[:, 0]
    assert (y == tiny_model(tokens)[ar, pos].argmax(-1)).all()
    delta = 1e-2

    def push(out, hook):
        add = torch.zeros_like(out)
        add[ar, pos] = delta * tset[1].W_dec[feature].detach()
        return out + add

    with torch.no_grad():
        logits, cache = tiny_model.run_with_cache(tokens, names_filter="ln_final.hook_scale")
        base = logits[ar, pos, y]
        frozen = ("ln_final.hook_scale", lambda s, hook: cache["ln_final.hook_scale"])
        pushed = tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", push), frozen])[ar, pos, y]
    active = att.act > 0
    per_unit = att.out_values[:, 0] / att.act.clamp(min=1e-9)
    measured = (pushed - base) / delta
    torch.testing.assert_close(measured[active], per_unit[active], rtol=1e-3, atol=1e-4)
    assert (att.out_values[~active] == 0).all()


def test_completeness_on_a_gemma3_shaped_model(make_transcoders):
    """RMSNorm before and after each sublayer, rotary positions, grouped-query heads, a gated MLP:
    the linearized forward covers them with no architecture-specific code."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        d_head=16,
        n_heads=4,
        n_key_value_heads=2,
        d_mlp=128,
        d_vocab=500,
        n_ctx=64,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=16,
        gated_mlp=True,
        use_normalization_before_and_after=True,
        original_architecture="Gemma3ForCausalLM",
        seed=0,
    )
    model = HookedTransformer(cfg).eval()
    tset = make_transcoders(model, d_sae=32, kind="jumprelu-skip", seed=1)
    tokens = torch.randint(0, 500, (6, 12), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(6) + 5
    att = attribute(model, tset, tokens, 2, torch.arange(6), pos, n_output=2)
    torch.testing.assert_close(att.z, _reference_z(model, tset, tokens, 2, torch.arange(6), pos), atol=1e-5, rtol=1e-5)
    assert completeness_gap(att).abs().max().item() < 1e-4 * (att.z.abs().max().item() + 1)
    torch.testing.assert_close(att.heads.sum((2, 3)), att.head_totals, atol=1e-5, rtol=1e-4)
    assert att.position.abs().max() == 0  # rotary: no position embedding leaf


def _gemma3_shaped():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        d_head=16,
        n_heads=4,
        n_key_value_heads=2,
        d_mlp=128,
        d_vocab=500,
        n_ctx=64,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=16,
        gated_mlp=True,
        use_normalization_before_and_after=True,
        original_architecture="Gemma3ForCausalLM",
        seed=0,
    )
    return HookedTransformer(cfg).eval()


@pytest.mark.parametrize("arch", ["gpt2", "gemma3"])
def test_lean_attribution_equals_the_plain_one(tiny_model, make_transcoders, arch):
    """The lean path (truncated differentiated forward, replay from the target layer, bias pass without
    encoders) gives every field of the plain path, at every layer, input and output side."""
    model = tiny_model if arch == "gpt2" else _gemma3_shaped()
    tset = make_transcoders(model, d_sae=32, kind="jumprelu-skip", seed=2)
    V = model.cfg.d_vocab
    tokens = torch.randint(0, V, (5, 10), generator=torch.Generator().manual_seed(3))
    pos, feature = torch.tensor([9, 2, 5, 0, 7]), torch.tensor([0, 3, 5, 7, 11])
    for layer in range(model.cfg.n_layers):
        for n_output in (0, 2):
            lean = attribute(model, tset, tokens, layer, feature, pos, n_output=n_output)
            plain = attribute(model, tset, tokens, layer, feature, pos, n_output=n_output, lean=False)
            for name in ("z", "act", "bias", "errors", "token", "position", "heads", "head_totals", "out_values"):
                torch.testing.assert_close(getattr(lean, name), getattr(plain, name), atol=1e-5, rtol=1e-4)
            assert torch.equal(lean.out_tokens, plain.out_tokens) and set(lean.features) == set(plain.features)
            for l in lean.features:
                torch.testing.assert_close(lean.features[l], plain.features[l], atol=1e-5, rtol=1e-4)
            assert completeness_gap(lean).abs().max().item() < 1e-4 * (lean.z.abs().max().item() + 1)


# the integers and names existing atlases hold (clusters.contributors keys, attributions.kind): never change
STORED_KINDS = {"feature": 0, "head": 1, "token": 2, "position": 3, "error": 4, "bias": 5, "logit": 6}


def test_attribution_kinds_are_the_stored_integers_and_the_schema_docs_table():
    assert {k.label: int(k) for k in AttributionKind} == STORED_KINDS
    assert KIND_LABELS == tuple(STORED_KINDS) and [int(k) for k in AttributionKind] == list(range(len(KIND_LABELS)))
    assert KIND_SIDES == ("input",) * 6 + ("output",)
    schema = (Path(__file__).parents[1] / "docs" / "schema.md").read_text()
    section = schema.split("## Attribution kinds", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| (\w+) \| (\d+) \| (input|output) \|", section, re.M)
    assert documented == [(k.label, str(int(k)), k.side) for k in AttributionKind]
    row = next(line for line in schema.splitlines() if line.startswith("| `attributions` |"))
    assert re.search(r"`kind` ∈ ([\w, ]+)", row).group(1).strip().split(", ") == list(KIND_LABELS)
