"""CircuitLens attribution: how one feature's pre-activation arises in one example (docs/method.md §4.2, §4.3).

Each example is (tokens, target position t, feature i of layer l); a batch shares the layer.

Algorithm (the *linearized forward*: one forward pass with hooks, then autograd):
1. Freeze: every attention pattern (``attn.hook_pattern``) and every norm scale (``*.hook_scale``)
   is replaced by its detached observed value. What is left between the embeddings and the read
   point is affine.
2. Cut at every earlier MLP (layers l' < l): its output is replaced by the transcoder's
   reconstruction ``a W_dec + b_dec (+ x W_skip^T)`` plus an error leaf ``out - reconstruction``;
   the activations ``a`` and the errors are detached leaves (a layer with no transcoder is one
   error leaf). Token and position embeddings are leaves too.
3. z = x_l[t] . W_enc[:, i] + b_enc[i] is now an affine function f of the leaves, so the
   contribution of each leaf is leaf x df/dleaf (one ``autograd.grad`` for the whole batch):
   upstream features (l', j) at each source position (through the frozen attention), the token
   embedding and position embedding at each position, and the error of each layer at each
   position.
4. Biases: f(0), the same linearized forward with every leaf set to zero (patterns and scales
   kept). Completeness, checked by ``completeness_gap``: z = f(0) + sum of all contributions, exact
   for an affine f; any unfrozen nonlinearity or a missed path breaks it.
5. Attention heads by source position (docs/method.md §4.2, a second view of the same paths): for head
   h of layer l' <= l, pattern[h, t, s] (v_s . dz/dhook_z[t, h]), which sums over heads and
   sources to (attn_out[t] - b_O) . dz/dattn_out[t] for each layer.
6. Output side (docs/method.md §4.3): with the MLPs from layer l on held at their observed outputs
   (and patterns and scales frozen), the model after layer l is linear, so one more forward with
   f_dec added at (layer l, position t) gives f_dec J for every later position at once; for the
   token y_k the model predicts at t + k (k < n_output) the effect is a_i[t] (f_dec J W_U[:, y_k]).
   A later layer's transcoder skip path stays live, as on the input side (and in circuit-tracer):
   its MLP output is held at observed - x_obs W_skipᵀ + x W_skipᵀ, x its input in this forward
   (only its features and its error are frozen). The push is added where the transcoder writes
   (``hook_out``), so a write before ln2_post (``mlp.hook_out``) goes through the frozen ln2_post.
7. Cross-layer transcoders (atlas/transcoders/clt.py) go through the same steps: the cut at layer
   l' replaces its MLP output by the CLT's reconstruction sum_{s <= l'} a_s W_dec[s -> l'] + b_dec[l']
   (+ x S) with every a_s the one leaf of layer s, so a feature's contribution sums its paths through
   all its decoder slices; on the output side the feature's slice into each layer k >= l is pushed
   at k. Completeness is exact for the same reason (tests/test_clt.py).
Autograd over the linearized forward was chosen over explicit OV products: one code path covers
every architecture TransformerLens runs (LayerNorm or RMSNorm, extra norms, grouped-query heads,
rotary), and the completeness identity tests it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Attribution:
    layer: int
    feature: torch.Tensor         # [batch] explained feature index
    pos: torch.Tensor             # [batch] target position t
    z: torch.Tensor               # [batch] pre-activation in the linearized forward
    act: torch.Tensor             # [batch] activation a_i[t]
    bias: torch.Tensor            # [batch] f(0)
    features: dict[int, torch.Tensor]   # l' -> [batch, pos, d_sae] upstream feature contributions
    errors: torch.Tensor          # [batch, layer, pos] (layers 0..l-1)
    token: torch.Tensor           # [batch, pos] token embedding contributions
    position: torch.Tensor        # [batch, pos] position embedding contributions (0 if none)
    heads: torch.Tensor           # [batch, layer + 1, n_heads, pos] head view by source position
    head_totals: torch.Tensor     # [batch, layer + 1] (attn_out[t] - b_O) . dz/dattn_out[t]
    out_tokens: torch.Tensor      # [batch, n_output] predicted token at t + k (-1 past the end)
    out_values: torch.Tensor      # [batch, n_output] a f_dec J W_U[:, y]


def completeness_gap(att: Attribution) -> torch.Tensor:
    """[batch] z - (biases + features + errors + embeddings); ~0 when the decomposition is complete."""
    total = att.bias + att.errors.sum((1, 2)) + att.token.sum(1) + att.position.sum(1)
    for c in att.features.values():
        total = total + c.sum((1, 2))
    return att.z - total


def _is_clt(tset) -> bool:
    from atlas.transcoders.clt import CrossLayerTranscoder

    return isinstance(tset, CrossLayerTranscoder)


def _mlp_out(model, tset, l: int) -> str:
    return tset[l].hook_out if l in tset.layer_ids else f"blocks.{l}.hook_mlp_out"


def _skip(tset, l: int):
    """x [.., d_in] -> layer l's skip term [.., d_out], or None: per-layer x W_skipᵀ, CLT x S_l."""
    if l not in tset.layer_ids:
        return None
    if _is_clt(tset):
        S = tset.skip(l)
        return None if S is None else (lambda x: x @ S)
    t = tset[l]
    return (lambda x: x @ t.sae.W_skip.T) if t.has_skip else None


def attribute(model, tset, tokens: torch.Tensor, layer: int, feature: torch.Tensor, pos: torch.Tensor,
              n_output: int = 0, lean: bool = True) -> Attribution:
    """Input-side (and, with n_output > 0, output-side) attribution for a batch of examples.

    tokens [batch, seq]; feature, pos [batch]: explain feature[b] of ``layer`` at position pos[b].
    ``lean`` (the default) does only the work the target needs, with the same result: the
    differentiated forward stops after ``layer`` (the layers above run once without autograd, for
    the output side); the output-side replay starts at ``layer`` from the stored residual instead of
    re-running the layers below; the bias pass (all leaves zero) skips the encoders and decoders,
    whose outputs it does not use (zero activations decode to ``b_dec`` exactly; a skip term, the
    only part of a reconstruction that does not vanish with them, is kept: per-layer ``x W_skipᵀ``,
    CLT ``x_l S_l``). Replaying from ``layer`` is exact for skip transcoders and CLTs too, with no
    fallback: every push (a CLT feature's slice into each k >= ``layer``) and every live skip path
    (layers > ``layer``) sits at or above ``layer``, so the layers below it replay unchanged.
    ``lean=False`` is the plain version, kept as the reference the benchmark and tests compare with
    (tests/test_attribution.py, tests/test_hook_points.py, tests/test_clt.py: lean equals plain).
    """
    from atlas.transcoders.hook_points import add_mlp_hook_points, needs_mlp_hook_points

    tc, cfg = tset[layer], model.cfg
    clt = _is_clt(tset)
    present = set(tset.layer_ids)
    if needs_mlp_hook_points(h for t in tset for h in (t.hook_in, t.hook_out)):
        add_mlp_hook_points(model)
    B, T = tokens.shape
    ar = torch.arange(B)
    feature, pos = torch.as_tensor(feature).long(), torch.as_tensor(pos).long()
    frozen, captured, zs, vs = {}, {}, {}, {}
    leaves: dict[tuple, torch.Tensor] = {}
    state = {"zero": False, "replay": False}

    def new_leaf(key, value):
        t = (torch.zeros_like(value) if state["zero"] else value.detach()).requires_grad_(True)
        leaves[key] = t
        return t

    def freeze(x, hook):
        if not (state["zero"] or state["replay"]):
            frozen[hook.name] = x.detach()
        return frozen[hook.name]

    def embed_leaf(x, hook):
        return new_leaf(("embed", hook.name), x)

    def capture(x, hook):
        captured[hook.name] = x
        return x

    def keep_z(z, hook):  # [batch, pos, n_heads, d_head]
        zs[hook.layer()] = z
        return z

    def keep_v(v, hook):  # [batch, pos, n_kv_heads, d_head]
        vs[hook.layer()] = v.detach()
        return v

    skips = {l: _skip(tset, l) for l in range(cfg.n_layers)}

    def cut_mlp(l):
        def hook(out, hook):  # [batch, pos, d_model]
            if l not in present:
                return new_leaf(("error", l), out)
            t = tset[l]
            x = captured[t.hook_in]
            if lean and state["zero"]:  # a = 0 (every leaf zero): the encoders' and decoders' outputs are unused
                new_leaf(("feature", l), torch.zeros(*out.shape[:-1], t.d_sae, dtype=out.dtype))
                # per-layer: 0 W_dec + b_dec + skip; CLT: b_dec[l] + x_l S_l (no activations to decode)
                recon = tset.reconstruct(l, {}, x) if clt else t.b_dec.expand_as(out)
                if not clt and skips[l] is not None:
                    recon = recon + skips[l](x)
            elif clt:  # y_l = sum_{l' <= l} a_l' W_dec[l' -> l] + b_dec[l] + x_l S_l; a_l is a leaf here
                new_leaf(("feature", l), tset.encode(l, x))                                # [batch, pos, d_sae]
                recon = tset.reconstruct(l, {s: leaves[("feature", s)] for s in range(l + 1)}, x)
            else:
                a = new_leaf(("feature", l), t.encode(x))                                  # [batch, pos, d_sae]
                recon = a @ t.W_dec + t.b_dec
                if skips[l] is not None:
                    recon = recon + skips[l](x)
            return recon + new_leaf(("error", l), out - recon)
        return hook

    at_t = torch.nn.functional.one_hot(pos, T).to(tc.b_enc.dtype)                # [batch, seq]
    pushes = {}                                                                    # hook -> [batch, seq, d_model]
    if n_output:  # what f writes, per layer: a CLT feature writes its slice into every layer k >= l
        for k in (range(layer, cfg.n_layers) if clt else [layer]):
            dec = tset.decoder_slice(layer, k) if clt else tc.W_dec
            pushes[_mlp_out(model, tset, k)] = at_t[..., None] * dec[feature].detach()[:, None, :]

    def frozen_out(out, hook):  # MLP outputs from layer l on: held at their observed values
        l = hook.layer()
        live_skip = l > layer and skips[l] is not None
        if not state["replay"]:
            frozen[hook.name] = out.detach()
            if live_skip:
                frozen[("skip_in", l)] = captured[tset[l].hook_in].detach()       # [batch, pos, d_in]
        held = frozen[hook.name]
        if state["replay"] and live_skip:                                      # skip path stays live
            held = held + skips[l](captured[tset[l].hook_in]) - skips[l](frozen[("skip_in", l)])
        return held + pushes[hook.name] if (state["replay"] and hook.name in pushes) else held

    stop = cfg.n_layers if n_output and not lean else layer + 1
    names = model.hook_dict
    hooks = [(n, freeze) for n in names if n.endswith("hook_scale") or n.endswith("attn.hook_pattern")]
    hooks += [(n, embed_leaf) for n in ("hook_embed", "hook_pos_embed") if n in names]
    hooks += [(f"blocks.{l}.attn.hook_z", keep_z) for l in range(layer + 1)]
    hooks += [(f"blocks.{l}.attn.hook_v", keep_v) for l in range(layer + 1)]
    hooks += [(tset[l].hook_in, capture) for l in range(layer) if l in present]
    hooks += [(tc.hook_in, capture), (f"blocks.{layer}.hook_resid_pre", capture)]
    if n_output:  # later layers' skip inputs (step 6)
        hooks += [(tset[l].hook_in, capture) for l in range(layer + 1, cfg.n_layers) if skips[l] is not None]
    hooks += [(_mlp_out(model, tset, l), cut_mlp(l)) for l in range(layer)]
    if n_output:
        hooks += [(_mlp_out(model, tset, l), frozen_out) for l in range(layer, cfg.n_layers)]

    def forward(stop_at, grad=False):
        leaves.clear()
        with torch.set_grad_enabled(grad), model.hooks(fwd_hooks=hooks):
            resid = model(tokens, stop_at_layer=stop_at)
            x = captured[tc.hook_in][ar, pos]                                      # [batch, d_in]
            z = (x * tc.W_enc[:, feature].T).sum(-1) + tc.b_enc[feature]
            final = model.ln_final(resid) if stop_at == cfg.n_layers else None
        return z, x, final, resid

    def upper(resid, start):  # the layers from ``start`` on, from a stored residual, then ln_final
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            if start < cfg.n_layers:
                resid = model(resid, start_at_layer=start, stop_at_layer=cfg.n_layers)
            return model.ln_final(resid)

    z, x_t, final, resid_l = forward(stop, grad=True)
    if n_output and lean:                       # the observed upper layers, once, without autograd
        final = upper(resid_l.detach(), layer + 1)
    keys = list(leaves)
    z_layers = sorted(zs)
    grads = torch.autograd.grad(z.sum(), [leaves[k] for k in keys] + [zs[l] for l in z_layers], allow_unused=True)
    g = dict(zip(keys + [("z", l) for l in z_layers], grads))

    def contrib(key):  # leaf * grad summed over the model dimension -> [batch, pos]
        gr = g.get(key)
        return torch.zeros(B, T) if gr is None else (leaves[key].detach() * gr).sum(-1)

    features = {l: (leaves[("feature", l)].detach() * g[("feature", l)]) if g[("feature", l)] is not None
                else torch.zeros_like(leaves[("feature", l)]) for l in range(layer) if l in present}
    errors = torch.stack([contrib(("error", l)) for l in range(layer)], 1) if layer else torch.zeros(B, 0, T)
    token = contrib(("embed", "hook_embed"))
    position = contrib(("embed", "hook_pos_embed")) if ("embed", "hook_pos_embed") in leaves else torch.zeros(B, T)

    # attention heads by source position (step 5)
    heads, head_totals = [], []
    for l in z_layers:
        G = g[("z", l)][ar, pos] if g[("z", l)] is not None else torch.zeros(B, cfg.n_heads, cfg.d_head)  # [b, h, dh]
        v = vs[l].repeat_interleave(cfg.n_heads // vs[l].shape[2], dim=2)                 # [b, s, h, dh]
        pattern = frozen[f"blocks.{l}.attn.hook_pattern"][ar, :, pos]                        # [b, h, s]
        heads.append(pattern * torch.einsum("bshd,bhd->bhs", v, G))
        head_totals.append((zs[l][ar, pos].detach() * G).sum((1, 2)))
    heads, head_totals = torch.stack(heads, 1), torch.stack(head_totals, 1)

    act = tc.encode(x_t.detach())[ar, feature]                                              # [batch]
    out_tokens = torch.full((B, n_output), -1, dtype=torch.long)
    out_values = torch.zeros(B, n_output)
    if n_output:  # step 6: the same frozen forward again with f_dec added at (l, t); linear, so one pass
        state["replay"] = True
        if lean:                                # layers below ``layer`` do not see the push: start at it
            pushed = upper(captured[f"blocks.{layer}.hook_resid_pre"].detach(), layer)
        else:
            _, _, pushed, _ = forward(cfg.n_layers)
        state["replay"] = False
        p = pos[:, None] + torch.arange(n_output)[None, :]                                # [batch, k]
        ok = p < T
        pc = p.clamp(max=T - 1)
        f0 = final.detach()[ar[:, None], pc]                                               # [batch, k, d]
        y = (f0 @ model.W_U + model.b_U).argmax(-1)                                       # [batch, k]
        delta = ((pushed[ar[:, None], pc] - f0) * model.W_U.T[y]).sum(-1)                  # [batch, k]
        out_tokens = torch.where(ok, y, torch.full_like(y, -1))
        out_values = torch.where(ok, act.detach()[:, None] * delta, torch.zeros(()))

    state["zero"] = True                                  # step 4: f(0), patterns and scales kept
    bias, _, _, _ = forward(layer + 1)
    return Attribution(layer, feature, pos, z.detach(), act.detach(), bias.detach(), features, errors.detach(),
                       token.detach(), position.detach(), heads.detach(), head_totals.detach(), out_tokens,
                       out_values.detach())
