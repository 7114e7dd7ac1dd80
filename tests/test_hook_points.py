"""Where each format's input and output are, on models with non-trivial norm gains and biases, against an
independent forward of that format's rule (tests/normed_models.py), and CircuitLens on those points.

Bugs these tests catch (each failed on the code before): circuit-tracer's ``mlp.hook_in`` read as
ln2.hook_normalized (before ln2's gain and bias); its ``mlp.hook_out`` read as hook_mlp_out (after
ln2_post in Gemma 2/3); the output side freezing later layers' skip paths."""

from __future__ import annotations

import pytest
import torch
import yaml

from atlas.lens.attribution import attribute, completeness_gap
from atlas.transcoders import load_transcoders
from atlas.transcoders.writers import write_layer
from tests.normed_models import normed_model, reference_mlp_points

D, F = 32, 40


def _circuit_tracer_files(root, n_layers=3, skip=False, seed=0, hooks=("mlp.hook_in", "mlp.hook_out")):
    """circuit-tracer layer_{l}.safetensors (W_enc stored [F, d]) + config.yaml naming the hooks."""
    gen = torch.Generator().manual_seed(seed)
    written = {}
    for l in range(n_layers):
        t = {
            "W_enc": torch.randn(F, D, generator=gen) * 0.4,
            "b_enc": torch.randn(F, generator=gen) * 0.3,
            "W_dec": torch.randn(F, D, generator=gen) * 0.2,
            "b_dec": torch.randn(D, generator=gen) * 0.05,
        }
        if skip:
            t["W_skip"] = torch.randn(D, D, generator=gen) * 0.3
        write_layer("circuit-tracer", root, l, t)
        written[l] = t
    (root / "config.yaml").write_text(yaml.safe_dump({"feature_input_hook": hooks[0], "feature_output_hook": hooks[1]}))
    return written


@pytest.mark.parametrize("kind", ["ln", "gemma3"])
def test_circuit_tracer_mlp_hooks_are_the_mlp_modules_input_and_output(tmp_path, kind):
    model = normed_model(kind)
    _circuit_tracer_files(tmp_path)
    tset = load_transcoders(f"circuit-tracer:{tmp_path}", model)
    tokens = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(1))
    for l in range(3):
        tc = tset[l]
        assert (tc.hook_in, tc.hook_out) == (f"blocks.{l}.mlp.hook_in", f"blocks.{l}.mlp.hook_out")
        _, cache = model.run_with_cache(tokens, names_filter=[tc.hook_in, tc.hook_out])
        resid_mid, x_ref, y_ref = reference_mlp_points(model, tokens, l)
        torch.testing.assert_close(cache[tc.hook_in], x_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cache[tc.hook_out], y_ref, atol=1e-4, rtol=1e-4)
        if kind == "gemma3":  # the point is before ln2_post: hook_mlp_out differs from it
            _, c2 = model.run_with_cache(tokens, names_filter=f"blocks.{l}.hook_mlp_out")
            assert (c2[f"blocks.{l}.hook_mlp_out"] - y_ref).abs().max() > 1e-2


def test_adding_mlp_hook_points_changes_nothing_else():
    model = normed_model("gemma3")
    tokens = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(2))
    before, names = model(tokens), [n for n, _ in model.named_parameters()]
    from atlas.transcoders.hook_points import add_mlp_hook_points

    add_mlp_hook_points(model)
    add_mlp_hook_points(model)  # idempotent: one pair of hook points per block
    assert [n for n, _ in model.named_parameters()] == names
    assert sum(n.endswith("mlp.hook_in") for n in model.hook_dict) == model.cfg.n_layers
    torch.testing.assert_close(model(tokens), before)
    # editing the new point edits the MLP's input: zeroing it leaves only the MLP's biases' effect
    _, x_ref, _ = reference_mlp_points(model, tokens, 1)
    out = {}
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.1.mlp.hook_in", lambda x, hook: x * 0),
            ("blocks.1.mlp.hook_out", lambda y, hook: out.setdefault("y", y)),
        ],
    )
    zero_in = model.blocks[1].mlp(torch.zeros_like(x_ref))
    torch.testing.assert_close(out["y"], zero_in)


@pytest.mark.parametrize("kind", ["ln", "gemma3"])
def test_attribution_reads_the_mlp_input_and_stays_complete(tmp_path, kind):
    model = normed_model(kind, seed=3)
    written = _circuit_tracer_files(tmp_path, skip=True, seed=3)
    tset = load_transcoders(f"circuit-tracer:{tmp_path}", model)
    B, T, layer = 6, 10, 2
    tokens = torch.randint(0, 300, (B, T), generator=torch.Generator().manual_seed(4))
    feature, pos = torch.arange(B), torch.arange(B) + 3
    att = attribute(model, tset, tokens, layer, feature, pos)
    _, x_ref, _ = reference_mlp_points(model, tokens, layer)
    ar = torch.arange(B)
    z_ref = (x_ref[ar, pos] * written[layer]["W_enc"][feature]).sum(-1) + written[layer]["b_enc"][feature]
    torch.testing.assert_close(att.z, z_ref, atol=1e-4, rtol=1e-4)
    assert completeness_gap(att).abs().max().item() < 1e-4 * (att.z.abs().max().item() + 1)


@pytest.mark.parametrize("kind", ["ln", "gemma3"])
def test_output_side_keeps_later_skip_paths_live(tmp_path, kind):
    """Reference: an intervention written with plain torch forward hooks on the MLP modules. Patterns and
    norm scales frozen; at the explained layer the MLP module's output gets delta * f_dec at t; every later
    MLP is held at its observed output with its skip term recomputed from its current input
    (circuit-tracer's direct-effects rule): observed - x_obs W_skipᵀ + x W_skipᵀ."""
    model = normed_model(kind, seed=5)
    written = _circuit_tracer_files(tmp_path, skip=True, seed=5)
    tset = load_transcoders(f"circuit-tracer:{tmp_path}", model)
    B, T, layer, delta = 4, 9, 0, 1e-2
    tokens = torch.randint(0, 300, (B, T), generator=torch.Generator().manual_seed(6))
    pos, ar = torch.tensor([8, 3, 5, 2]), torch.arange(B)
    _, x_ref, _ = reference_mlp_points(model, tokens, layer)
    feature = tset[layer].encode(x_ref[ar, pos]).detach().argmax(-1)  # the most active feature
    att = attribute(model, tset, tokens, layer, feature, pos, n_output=1)

    observed = {}
    handles = [
        model.blocks[l].mlp.register_forward_hook(
            lambda m, args, out, l=l: observed.__setitem__(l, (args[0].detach(), out.detach()))
        )
        for l in range(3)
    ]
    with torch.no_grad():
        frozen_names = [n for n in model.hook_dict if n.endswith("hook_scale") or n.endswith("hook_pattern")]
        base, cache = model.run_with_cache(tokens, names_filter=frozen_names)
    for h in handles:
        h.remove()
    push = torch.zeros(B, T, D)
    push[ar, pos] = delta * written[layer]["W_dec"][feature]

    def held(m, args, out, l):
        x_obs, y_obs = observed[l]
        if l == layer:
            return y_obs + push
        W = written[l]["W_skip"]
        return y_obs - x_obs @ W.T + args[0] @ W.T

    handles = [
        model.blocks[l].mlp.register_forward_hook(lambda m, a, o, l=l: held(m, a, o, l)) for l in range(layer, 3)
    ]
    try:
        with torch.no_grad():
            pushed = model.run_with_hooks(
                tokens, fwd_hooks=[(n, lambda x, hook: cache[hook.name]) for n in frozen_names]
            )
    finally:
        for h in handles:
            h.remove()
    y = att.out_tokens[:, 0]
    assert (y == base[ar, pos].argmax(-1)).all()
    measured = (pushed[ar, pos, y] - base[ar, pos, y]) / delta
    active = att.act > 0
    assert active.all()
    per_unit = att.out_values[:, 0] / att.act.clamp(min=1e-9)
    torch.testing.assert_close(per_unit[active], measured[active], rtol=1e-3, atol=1e-4)


def test_ln_centered_edges_fold_the_gain_for_a_read_after_it():
    """mlp.hook_in is after ln2's gain w: the linear map from the residual stream to it includes diag(w)."""
    from atlas.lens.virtual_weights import fold_read_norm

    model = normed_model("ln", seed=7)
    W_enc, W_dec = torch.randn(D, F), torch.randn(F, D)
    enc, decs = fold_read_norm(model, 1, "blocks.1.mlp.hook_in", W_enc, {0: W_dec}, "ln_centered")
    torch.testing.assert_close(enc, model.blocks[1].ln2.w.detach()[:, None] * W_enc)
    torch.testing.assert_close(decs[0], W_dec - W_dec.mean(1, keepdim=True))
    enc, _ = fold_read_norm(model, 1, "blocks.1.hook_resid_mid", W_enc, {0: W_dec}, "ln_centered")
    assert enc is W_enc


def _most_active(model, tset, tokens, layer, pos):
    """Per example, the feature of ``layer`` most active at pos (read at the transcoder's own input)."""
    from atlas.transcoders.hook_points import add_mlp_hook_points

    add_mlp_hook_points(model)
    _, cache = model.run_with_cache(tokens, names_filter=tset[layer].hook_in)
    return tset[layer].encode(cache[tset[layer].hook_in][torch.arange(len(pos)), pos]).detach().argmax(-1)


@pytest.mark.parametrize("kind", ["ln", "gemma3"])
def test_lean_equals_plain_with_live_skip_paths_at_the_mlp_hook_points(tmp_path, kind):
    """The lean path (replay from the target layer's stored residual, bias pass without encoders) keeps
    later layers' skip paths live exactly as the plain path does: every field agrees at every layer."""
    model = normed_model(kind, seed=7)
    _circuit_tracer_files(tmp_path, skip=True, seed=7)
    tset = load_transcoders(f"circuit-tracer:{tmp_path}", model)
    tokens = torch.randint(0, 300, (4, 9), generator=torch.Generator().manual_seed(8))
    pos = torch.tensor([8, 3, 5, 2])
    for layer in range(3):
        feature = _most_active(model, tset, tokens, layer, pos)  # active: out_values not all 0
        lean = attribute(model, tset, tokens, layer, feature, pos, n_output=2)
        plain = attribute(model, tset, tokens, layer, feature, pos, n_output=2, lean=False)
        for name in ("z", "act", "bias", "errors", "token", "position", "heads", "head_totals", "out_values"):
            torch.testing.assert_close(getattr(lean, name), getattr(plain, name), atol=1e-5, rtol=1e-4, msg=name)
        assert torch.equal(lean.out_tokens, plain.out_tokens)
        for l in plain.features:
            torch.testing.assert_close(lean.features[l], plain.features[l], atol=1e-5, rtol=1e-4)
        assert plain.out_values.abs().max() > 0  # the output side is exercised
