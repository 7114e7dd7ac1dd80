"""`atlas inspect`: what a transcoder set is, whether it fits the model, and how well it
reconstructs the MLP outputs on a few sentences.

1. Load the model and the transcoder set; ``check_against`` the model (hooks exist, widths match
   d_model, weights finite).
2. Run the model on a few sentences (built in, or the user's) with ``run_with_cache``, caching only
   the hooks the transcoders read and write and stopping after the last needed block (no
   unembedding). The BOS position is left out: its activations are outliers in real models.
3. Per layer, with x [n_tok, d_in] at hook_in and y [n_tok, d_out] at hook_out:
   ŷ = transcoder(x) (with its skip term, if any), a = encode(x) [n_tok, d_sae],
   FVE = 1 - Σ‖y - ŷ‖² / Σ‖y - ȳ‖² (ȳ the mean over tokens), L0 = mean over tokens of #(a > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from atlas.errors import AtlasError, TranscoderError

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer

    from atlas.transcoders import TranscoderSet
    from atlas.transcoders.clt import CrossLayerTranscoder

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "In 1969, two astronauts walked on the Moon while millions watched on television.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "She opened the letter slowly, afraid of what it might say about her brother.",
)


@dataclass
class LayerQuality:
    layer: int
    fve: float  # fraction of variance of hook_out explained by the reconstruction
    l0: float  # mean number of active features per token
    n_tokens: int


@dataclass
class InspectReport:
    model: str
    model_shape: dict
    spec: str
    tset: TranscoderSet | CrossLayerTranscoder
    n_texts: int
    quality: dict[int, LayerQuality] = field(default_factory=dict)


def fraction_of_variance_explained(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    """1 - Σ‖y - ŷ‖² / Σ‖y - ȳ‖² over tokens; y, y_hat [n_tok, d]."""
    y, y_hat = y.double(), y_hat.double()
    residual = (y - y_hat).pow(2).sum()
    total = (y - y.mean(dim=0, keepdim=True)).pow(2).sum()
    return float(1.0 - residual / total) if total > 0 else float("nan")


def measure_quality(
    model: HookedTransformer,
    tset: TranscoderSet | CrossLayerTranscoder,
    texts: tuple[str, ...] | list[str] = SENTENCES,
    token_batches=None,
) -> dict[int, LayerQuality]:
    """FVE and L0 per layer on ``texts`` (or on ``token_batches``, [1, pos] token tensors) (step 2-3).
    A cross-layer transcoder is measured per output layer k: ŷ_k sums the slices of every source
    layer <= k (plus the skip term), and L0 is that of source layer k's features."""
    import torch

    from atlas.transcoders.clt import CrossLayerTranscoder

    hooks = {h for tc in tset for h in (tc.hook_in, tc.hook_out)}
    stop = max(tset.layer_ids) + 1
    xs: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    if token_batches is None:
        token_batches = [model.to_tokens(text, prepend_bos=True)[:, : model.cfg.n_ctx] for text in texts]  # [1, pos]
    with torch.no_grad():
        for tokens in token_batches:
            if tokens.shape[1] < 2:
                continue
            _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks, stop_at_layer=stop)
            for h in hooks:
                xs[h].append(cache[h][0, 1:])  # [pos - 1, width], BOS dropped
        if not xs[next(iter(hooks))]:
            raise AtlasError(f"no tokens to measure on (the texts were empty): {list(texts)!r}")
        acts = {h: torch.cat(v) for h, v in xs.items()}
        quality = {}
        feats: dict[int, torch.Tensor] = {}
        for tc in tset:
            x, y = acts[tc.hook_in], acts[tc.hook_out]  # [n_tok, d_in], [n_tok, d_out]
            for name, hook, got, want in (
                ("reads", tc.hook_in, x.shape[-1], tc.d_in),
                ("writes", tc.hook_out, y.shape[-1], tc.d_out),
            ):
                if got != want:
                    raise TranscoderError(
                        f"transcoder layer {tc.layer} ({tc.uri}) {name} {hook!r}, which is "
                        f"{got} wide in the model, but its width is {want}"
                    )
            if isinstance(tset, CrossLayerTranscoder):  # layers in order: sources <= k known
                feats[tc.layer] = a = tset.encode(tc.layer, x)  # [n_tok, d_sae]
                y_hat = tset.reconstruct(tc.layer, feats, x)  # [n_tok, d_out], skip included
            else:
                a = tc.encode(x)  # [n_tok, d_sae]
                y_hat = tc.sae(x)  # [n_tok, d_out], skip included
            quality[tc.layer] = LayerQuality(
                tc.layer,
                fraction_of_variance_explained(y, y_hat.to(y.dtype)),
                float((a > 0).sum(-1).float().mean()),
                int(x.shape[0]),
            )
    return quality


def inspect_transcoders(
    model_spec: str,
    transcoders: str,
    layers: list[int] | None = None,
    texts: list[str] | None = None,
    dtype: str = "float32",
) -> InspectReport:
    from atlas.models import describe, load_model
    from atlas.transcoders import TranscoderSpec, load_transcoders

    model = load_model(model_spec)
    spec = TranscoderSpec.parse(transcoders, layers=layers)
    tset = load_transcoders(spec, model=model, dtype=dtype)
    report = InspectReport(
        model=str(model_spec), model_shape=describe(model), spec=str(spec), tset=tset, n_texts=len(texts or SENTENCES)
    )
    report.quality = measure_quality(model, tset, tuple(texts or SENTENCES))
    return report


def report_data(report: InspectReport) -> dict:
    """The report as plain data (`atlas inspect --json`): the model, the set, and per layer the
    transcoder's shape and files with its FVE and L0 (None where not measured)."""
    layers = []
    for tc in report.tset:
        q = report.quality.get(tc.layer)
        layers.append(
            {
                "layer": tc.layer,
                "hook_in": tc.hook_in,
                "hook_out": tc.hook_out,
                "d_in": tc.d_in,
                "d_sae": tc.d_sae,
                "d_out": tc.d_out,
                "activation": tc.activation,
                "has_skip": tc.has_skip,
                "dtype": str(tc.dtype),
                "format": tc.format,
                "uri": str(tc.uri),
                "fve": q.fve if q else None,
                "l0": q.l0 if q else None,
                "n_tokens": q.n_tokens if q else None,
            }
        )
    return {
        "model": report.model,
        "model_shape": report.model_shape,
        "spec": report.spec,
        "set_name": report.tset.set_name,
        "n_texts": report.n_texts,
        "cross_layer": getattr(report.tset, "decoder_slice", None) is not None,
        "layers": layers,
    }


def format_report(report: InspectReport) -> str:
    s, tset = report.model_shape, report.tset
    n_tok = next(iter(report.quality.values())).n_tokens if report.quality else 0
    lines = [
        f"model        {report.model}  ({s['n_layers']} layers, d_model {s['d_model']}, d_mlp {s['d_mlp']}, "
        f"vocab {s['d_vocab']})",
        f"transcoders  {report.spec}  set {tset.set_name!r}, {len(tset)} layer(s)",
        "check        ok: every transcoder reads and writes hooks of the model, widths match, weights finite",
        f"quality      on {report.n_texts} sentences ({n_tok} tokens, BOS excluded): FVE of the MLP output, mean L0",
        "",
    ]
    if getattr(tset, "decoder_slice", None) is not None:  # a cross-layer transcoder
        lines[-1:-1] = [
            "cross-layer  features of layer l write into every layer k >= l; FVE of layer k's MLP "
            "output from the slices of all source layers <= k; L0 of layer k's features"
        ]
    header = ("layer", "reads", "writes", "d_in", "d_sae", "d_out", "act", "skip", "dtype", "format", "FVE", "L0")
    rows = [header]
    for tc in tset:
        q = report.quality.get(tc.layer)
        rows.append(
            (
                str(tc.layer),
                tc.hook_in,
                tc.hook_out,
                str(tc.d_in),
                str(tc.d_sae),
                str(tc.d_out),
                tc.activation,
                "yes" if tc.has_skip else "no",
                tc.dtype,
                tc.format,
                f"{q.fve:.4f}" if q else "-",
                f"{q.l0:.1f}" if q else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += ["", "files:"] + [f"  layer {tc.layer}: {tc.uri}" for tc in tset]
    return "\n".join(lines)
