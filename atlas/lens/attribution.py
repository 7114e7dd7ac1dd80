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

In code: ``attribute`` runs the steps on an ``AttributionContext``, which puts every freeze / cut /
hold hook on the model through one context manager and has one method per step; the steps pass
typed results (``Observed``, ``InputSide``, ``HeadView``, ``OutputSide``). Leaves are keyed
(``AttributionKind``, layer), the kinds that CircuitLens stores (atlas/lens/kinds.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import NamedTuple

import torch

from atlas.lens.kinds import AttributionKind as Kind


@dataclass(frozen=True)
class Attribution:
    layer: int  # the explained features' layer l
    feature: torch.Tensor  # [batch] explained feature index
    pos: torch.Tensor  # [batch] target position t
    z: torch.Tensor  # [batch] pre-activation in the linearized forward
    act: torch.Tensor  # [batch] activation a_i[t]
    bias: torch.Tensor  # [batch] f(0)
    features: dict[int, torch.Tensor]  # l' -> [batch, pos, d_sae] upstream feature contributions
    errors: torch.Tensor  # [batch, layer, pos] (layers 0..l-1)
    token: torch.Tensor  # [batch, pos] token embedding contributions
    position: torch.Tensor  # [batch, pos] position embedding contributions (0 if none)
    heads: torch.Tensor  # [batch, layer + 1, n_heads, pos] head view by source position
    head_totals: torch.Tensor  # [batch, layer + 1] (attn_out[t] - b_O) . dz/dattn_out[t]
    out_tokens: torch.Tensor  # [batch, n_output] predicted token at t + k (-1 past the end)
    out_values: torch.Tensor  # [batch, n_output] a f_dec J W_U[:, y]


def completeness_gap(att: Attribution) -> torch.Tensor:
    """[batch] z - (biases + features + errors + embeddings); ~0 when the decomposition is complete."""
    total = att.bias + att.errors.sum((1, 2)) + att.token.sum(1) + att.position.sum(1)
    for c in att.features.values():
        total = total + c.sum((1, 2))
    return att.z - total


def attribute(
    model,
    tset,
    tokens: torch.Tensor,
    layer: int,
    feature: torch.Tensor,
    pos: torch.Tensor,
    n_output: int = 0,
    lean: bool = True,
) -> Attribution:
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
    ctx = AttributionContext(model, tset, tokens, layer, feature, pos, n_output, lean)
    with ctx.install_hooks():
        obs = ctx.observe()  # 1.-3. the frozen, cut forward and dz/dleaf
        inputs = ctx.input_side(obs)  # 3. leaf x dz/dleaf
        heads = ctx.heads(obs)  # 5. heads by source position
        outputs = ctx.output_side(obs)  # 6. the replay with f_dec pushed at (l, t)
        bias = ctx.bias()  # 4. f(0)
    return Attribution(
        layer,
        ctx.feature,
        ctx.pos,
        obs.z,
        obs.act,
        bias,
        inputs.features,
        inputs.errors,
        inputs.token,
        inputs.position,
        heads.heads,
        heads.totals,
        outputs.tokens,
        outputs.values,
    )


class InputSide(NamedTuple):
    features: dict[int, torch.Tensor]  # l' -> [batch, pos, d_sae] upstream feature contributions
    errors: torch.Tensor  # [batch, layer, pos] each earlier layer's error
    token: torch.Tensor  # [batch, pos] token embedding contributions
    position: torch.Tensor  # [batch, pos] position embedding contributions (0 if none)


class HeadView(NamedTuple):
    heads: torch.Tensor  # [batch, layer + 1, n_heads, pos] by source position
    totals: torch.Tensor  # [batch, layer + 1] (attn_out[t] - b_O) . dz/dattn_out[t]


class OutputSide(NamedTuple):
    tokens: torch.Tensor  # [batch, n_output] predicted token at t + k (-1 past the end)
    values: torch.Tensor  # [batch, n_output] a f_dec J W_U[:, y]


class Observed(NamedTuple):
    """What the differentiated forward (steps 1-3) leaves for the other steps."""

    z: torch.Tensor  # [batch] pre-activation at (l, t), detached
    act: torch.Tensor  # [batch] activation a_i[t], detached
    leaves: dict  # (kind, layer) -> leaf: features [batch, pos, d_sae], others [batch, pos, d]
    grads: dict  # the leaves' keys -> dz/dleaf (None when unused); (HEAD, l') -> dz/dhook_z
    z_heads: dict  # l' <= l -> hook_z [batch, pos, n_heads, d_head]
    v: dict  # l' <= l -> hook_v [batch, pos, n_kv_heads, d_head], detached
    resid_pre: torch.Tensor  # [batch, seq, d_model] the residual entering layer l, detached
    final: torch.Tensor | None  # [batch, seq, d_model] observed ln_final output (None: not run), detached


class _Forward(NamedTuple):
    z: torch.Tensor  # [batch] pre-activation read at (l, t)
    x: torch.Tensor  # [batch, d_in] the transcoder's input at (l, t)
    resid: torch.Tensor  # [batch, seq, d_model] the residual after the last block run
    final: torch.Tensor | None  # [batch, seq, d_model] ln_final(resid) when every block ran


class _Pass(Enum):
    """Which forward the hooks serve; the hooks read it from the context."""

    OBSERVED = "observed"  # steps 1-3: record patterns, scales and held outputs; leaves are observed values
    ZERO = "zero"  # step 4: every leaf zero, patterns and scales as observed
    REPLAY = "replay"  # step 6: everything held as observed, f_dec pushed at (l, t)


_EMBEDS = {"hook_embed": Kind.TOKEN, "hook_pos_embed": Kind.POSITION}  # embedding leaves, keyed (kind, None)


class AttributionContext:
    """The freeze / cut / hold hooks of one batch's linearized forward, and what they record.

    ``install_hooks`` puts every hook on the model at once, for all passes; inside it ``observe``
    (steps 1-3), ``input_side`` (3), ``heads`` (5), ``output_side`` (6) and ``bias`` (4) run the
    passes they need. Each pass sets ``mode``, which the hooks read.
    """

    def __init__(self, model, tset, tokens: torch.Tensor, layer: int, feature, pos, n_output: int, lean: bool):
        from atlas.transcoders.hook_points import add_mlp_hook_points, needs_mlp_hook_points

        if needs_mlp_hook_points(h for t in tset for h in (t.hook_in, t.hook_out)):
            add_mlp_hook_points(model)
        self.model, self.tset, self.tokens, self.layer = model, tset, tokens, layer  # tokens [batch, seq]
        self.n_output, self.lean, self.n_layers = n_output, lean, model.cfg.n_layers
        self.tc, self.clt, self.present = tset[layer], _is_clt(tset), set(tset.layer_ids)
        self.feature, self.pos = torch.as_tensor(feature).long(), torch.as_tensor(pos).long()  # [batch]
        self.ar = torch.arange(tokens.shape[0])  # [batch]
        self.skips = {l: _skip(tset, l) for l in range(self.n_layers)}
        self.mode = _Pass.OBSERVED
        self.frozen: dict = {}  # hook -> observed pattern / scale / MLP output; ("skip_in", k) -> observed x_k
        self.captured: dict = {}  # hook -> the current pass's value (transcoder inputs, layer l's resid_pre)
        self.zs: dict = {}  # l' -> hook_z [batch, pos, n_heads, d_head] of the current pass
        self.vs: dict = {}  # l' -> hook_v [batch, pos, n_kv_heads, d_head] of the current pass, detached
        self.leaves: dict = {}  # (kind, layer) -> the current pass's leaves
        self.pushes = self._pushes() if n_output else {}  # hook -> [batch, seq, d_model] what f writes

    @contextmanager
    def install_hooks(self):
        """Every hook of every pass on the model, removed on leaving (normally or not)."""
        with self.model.hooks(fwd_hooks=self._hooks()):
            yield self

    # ---- the steps ------------------------------------------------------------------------------

    def observe(self) -> Observed:
        """Steps 1-3: the differentiated linearized forward, and dz/dleaf for every leaf and hook_z."""
        stop = self.n_layers if self.n_output and not self.lean else self.layer + 1
        fwd = self._forward(_Pass.OBSERVED, stop, grad=True)
        final = fwd.final
        if self.n_output and self.lean:  # the observed upper layers, once, without autograd
            final = self._upper(fwd.resid.detach(), self.layer + 1)
        leaves, zs = self.leaves, dict(self.zs)
        keys = list(leaves) + [(Kind.HEAD, l) for l in sorted(zs)]
        grads = torch.autograd.grad(fwd.z.sum(), list(leaves.values()) + [zs[l] for l in sorted(zs)], allow_unused=True)
        act = self.tc.encode(fwd.x.detach())[self.ar, self.feature]  # [batch]
        return Observed(
            fwd.z.detach(),
            act.detach(),
            leaves,
            dict(zip(keys, grads)),
            zs,
            dict(self.vs),
            self.captured[f"blocks.{self.layer}.hook_resid_pre"].detach(),
            None if final is None else final.detach(),
        )

    def input_side(self, obs: Observed) -> InputSide:
        """Step 3: each leaf x dz/dleaf, summed over the model dimension (features kept per feature)."""
        B, T = self.tokens.shape

        def contrib(key) -> torch.Tensor:  # [batch, pos]
            g = obs.grads.get(key)
            return torch.zeros(B, T) if g is None else (obs.leaves[key].detach() * g).sum(-1)

        features = {}
        for l in (l for l in range(self.layer) if l in self.present):
            a, g = obs.leaves[(Kind.FEATURE, l)], obs.grads[(Kind.FEATURE, l)]  # [batch, pos, d_sae]
            features[l] = a.detach() * g if g is not None else torch.zeros_like(a)
        errors = (
            torch.stack([contrib((Kind.ERROR, l)) for l in range(self.layer)], 1)
            if self.layer
            else torch.zeros(B, 0, T)
        )  # [batch, layer, pos]
        return InputSide(
            features, errors.detach(), contrib((Kind.TOKEN, None)).detach(), contrib((Kind.POSITION, None)).detach()
        )

    def heads(self, obs: Observed) -> HeadView:
        """Step 5: pattern[h, t, s] (v_s . dz/dhook_z[t, h]) for every head of layers l' <= l."""
        cfg, B = self.model.cfg, self.tokens.shape[0]
        heads, totals = [], []
        for l in sorted(obs.z_heads):
            g = obs.grads[(Kind.HEAD, l)]
            G = g[self.ar, self.pos] if g is not None else torch.zeros(B, cfg.n_heads, cfg.d_head)  # [b, h, dh]
            v = obs.v[l].repeat_interleave(cfg.n_heads // obs.v[l].shape[2], dim=2)  # [b, s, h, dh]
            pattern = self.frozen[f"blocks.{l}.attn.hook_pattern"][self.ar, :, self.pos]  # [b, h, s]
            heads.append(pattern * torch.einsum("bshd,bhd->bhs", v, G))
            totals.append((obs.z_heads[l][self.ar, self.pos].detach() * G).sum((1, 2)))  # [b]
        return HeadView(torch.stack(heads, 1).detach(), torch.stack(totals, 1).detach())

    def output_side(self, obs: Observed) -> OutputSide:
        """Step 6: a f_dec J W_U[:, y_k] for the token y_k the model predicts at t + k (k < n_output)."""
        (B, T), k, model = self.tokens.shape, self.n_output, self.model
        if not k:
            return OutputSide(torch.full((B, 0), -1, dtype=torch.long), torch.zeros(B, 0))
        if obs.final is None:
            raise ValueError("output_side needs the observed ln_final output: observe() with n_output > 0 gives it")
        # the frozen forward again with f_dec added at (l, t): linear, so one pass gives every t + k
        pushed: torch.Tensor | None
        if self.lean:  # layers below l do not see the push: start at l
            self.mode = _Pass.REPLAY
            pushed = self._upper(obs.resid_pre, self.layer)
        else:
            pushed = self._forward(_Pass.REPLAY, self.n_layers).final
        assert pushed is not None  # every block ran (stop = n_layers), so ln_final did
        p = self.pos[:, None] + torch.arange(k)[None, :]  # [batch, k]
        ok, pc = p < T, p.clamp(max=T - 1)
        f0 = obs.final[self.ar[:, None], pc]  # [batch, k, d]
        y = (f0 @ model.W_U + model.b_U).argmax(-1)  # [batch, k]
        delta = ((pushed[self.ar[:, None], pc] - f0) * model.W_U.T[y]).sum(-1)  # [batch, k]
        return OutputSide(
            torch.where(ok, y, torch.full_like(y, -1)),
            torch.where(ok, obs.act[:, None] * delta, torch.zeros(())).detach(),
        )

    def bias(self) -> torch.Tensor:
        """Step 4: f(0), the linearized forward with every leaf zero (patterns and scales kept). -> [batch]"""
        return self._forward(_Pass.ZERO, self.layer + 1).z.detach()

    # ---- passes ---------------------------------------------------------------------------------

    def _forward(self, mode: _Pass, stop: int, grad: bool = False) -> _Forward:
        """One pass from the tokens through the blocks below ``stop``, and z read at (l, t)."""
        self.mode, self.leaves = mode, {}
        tc = self.tc
        with torch.set_grad_enabled(grad):
            resid = self.model(self.tokens, stop_at_layer=stop)  # [batch, seq, d_model]
            x = self.captured[tc.hook_in][self.ar, self.pos]  # [batch, d_in]
            z = (x * tc.W_enc[:, self.feature].T).sum(-1) + tc.b_enc[self.feature]  # [batch]
            final = self.model.ln_final(resid) if stop == self.n_layers else None
        return _Forward(z, x, resid, final)

    def _upper(self, resid: torch.Tensor, start: int) -> torch.Tensor:
        """ln_final after the blocks from ``start`` on, from a stored residual [batch, seq, d_model], no autograd."""
        with torch.no_grad():
            if start < self.n_layers:
                resid = self.model(resid, start_at_layer=start, stop_at_layer=self.n_layers)
            return self.model.ln_final(resid)

    def _pushes(self) -> dict:
        """hook -> [batch, seq, d_model]: f_dec at (k, t); a CLT feature writes its slice into every k >= l."""
        T = self.tokens.shape[1]
        at_t = torch.nn.functional.one_hot(self.pos, T).to(self.tc.b_enc.dtype)  # [batch, seq]
        out = {}
        for k in range(self.layer, self.n_layers) if self.clt else [self.layer]:
            dec = self.tset.decoder_slice(self.layer, k) if self.clt else self.tc.W_dec  # [d_sae, d_model]
            out[_mlp_out(self.model, self.tset, k)] = at_t[..., None] * dec[self.feature].detach()[:, None, :]
        return out

    # ---- hooks ----------------------------------------------------------------------------------

    def _hooks(self) -> list:
        """(hook name, function) for every pass; the order is the order they run at a shared hook."""
        model, tset, layer, n = self.model, self.tset, self.layer, self.n_layers
        names = model.hook_dict
        hooks = [(h, self._freeze) for h in names if h.endswith("hook_scale") or h.endswith("attn.hook_pattern")]
        hooks += [(h, self._embed_leaf) for h in _EMBEDS if h in names]
        hooks += [(f"blocks.{l}.attn.hook_z", self._keep_z) for l in range(layer + 1)]
        hooks += [(f"blocks.{l}.attn.hook_v", self._keep_v) for l in range(layer + 1)]
        hooks += [(tset[l].hook_in, self._capture) for l in range(layer) if l in self.present]
        hooks += [(self.tc.hook_in, self._capture), (f"blocks.{layer}.hook_resid_pre", self._capture)]
        if self.n_output:  # later layers' skip inputs (step 6)
            hooks += [(tset[l].hook_in, self._capture) for l in range(layer + 1, n) if self.skips[l] is not None]
        hooks += [(_mlp_out(model, tset, l), partial(self._cut, l=l)) for l in range(layer)]
        if self.n_output:
            hooks += [(_mlp_out(model, tset, l), self._hold) for l in range(layer, n)]
        return hooks

    def _leaf(self, key, value: torch.Tensor) -> torch.Tensor:
        leaf = (torch.zeros_like(value) if self.mode is _Pass.ZERO else value.detach()).requires_grad_(True)
        self.leaves[key] = leaf
        return leaf

    def _freeze(self, x, hook):  # a pattern [batch, n_heads, q, k] or a norm scale: as observed (step 1)
        if self.mode is _Pass.OBSERVED:
            self.frozen[hook.name] = x.detach()
        return self.frozen[hook.name]

    def _embed_leaf(self, x, hook):  # [batch, pos, d_model]
        return self._leaf((_EMBEDS[hook.name], None), x)

    def _capture(self, x, hook):
        self.captured[hook.name] = x
        return x

    def _keep_z(self, z, hook):  # [batch, pos, n_heads, d_head]
        self.zs[hook.layer()] = z
        return z

    def _keep_v(self, v, hook):  # [batch, pos, n_kv_heads, d_head]
        self.vs[hook.layer()] = v.detach()
        return v

    def _cut(self, out, hook, l: int):  # out [batch, pos, d_model]: an earlier layer's MLP output (step 2)
        if l not in self.present:  # no transcoder: the output is one error leaf
            return self._leaf((Kind.ERROR, l), out)
        recon = self._reconstruction(l, out, self.captured[self.tset[l].hook_in])
        return recon + self._leaf((Kind.ERROR, l), out - recon)

    def _reconstruction(self, l: int, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Layer l's reconstruction [batch, pos, d_model] from its input x, with its activations as a leaf."""
        t, tset = self.tset[l], self.tset
        if (
            self.lean and self.mode is _Pass.ZERO
        ):  # a = 0 (every leaf zero): the encoders' and decoders' outputs are unused
            self._leaf((Kind.FEATURE, l), torch.zeros(*out.shape[:-1], t.d_sae, dtype=out.dtype))
            if self.clt:  # b_dec[l] + x_l S_l (no activations to decode)
                return tset.reconstruct(l, {}, x)
            recon = t.b_dec.expand_as(out)  # 0 W_dec + b_dec (+ skip below)
        elif self.clt:  # y_l = sum_{l' <= l} a_l' W_dec[l' -> l] + b_dec[l] + x_l S_l; a_l is a leaf here
            self._leaf((Kind.FEATURE, l), tset.encode(l, x))  # [batch, pos, d_sae]
            return tset.reconstruct(l, {s: self.leaves[(Kind.FEATURE, s)] for s in range(l + 1)}, x)
        else:
            recon = self._leaf((Kind.FEATURE, l), t.encode(x)) @ t.W_dec + t.b_dec  # a [batch, pos, d_sae]
        skip = self.skips[l]
        return recon if skip is None else recon + skip(x)

    def _hold(self, out, hook):  # out [batch, pos, d_model]: the MLP output of a layer k >= l (step 6)
        k, replay = hook.layer(), self.mode is _Pass.REPLAY
        skip = self.skips[k] if k > self.layer else None  # a later layer's skip path stays live
        if not replay:
            self.frozen[hook.name] = out.detach()
            if skip is not None:
                self.frozen[("skip_in", k)] = self.captured[self.tset[k].hook_in].detach()  # [batch, pos, d_in]
        held = self.frozen[hook.name]
        if replay and skip is not None:
            held = held + skip(self.captured[self.tset[k].hook_in]) - skip(self.frozen[("skip_in", k)])
        return held + self.pushes[hook.name] if (replay and hook.name in self.pushes) else held


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
