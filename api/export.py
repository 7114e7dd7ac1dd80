"""Export a neighbourhood or a path set as graph JSON in the circuit-tracer / Neuronpedia format.

The format (circuit-tracer's ``create_graph_files``; Neuronpedia's graph viewer) is one object:
``metadata`` (slug, scan = model, prompt, prompt_tokens, schema_version), ``qParams`` (pinned
ids, clicked id), ``nodes`` (node_id, feature, layer, ctx_idx, feature_type, jsNodeId, clerp,
...) and ``links`` (source and target node_ids, weight). An atlas graph is prompt-free (weights,
not one prompt's attribution), so every node sits at ctx_idx 0, the prompt is empty, and each
node carries its atlas public id in ``atlas_id``. A node's ``feature`` is circuit-tracer's feature number
(``index + 10**ceil(log10(d_sae)) * layer``, graph_models.Node.feature_node), the name of its
feature file (``atlas export circuit-tracer``).
"""

from __future__ import annotations

from api import graph, queries
from api.context import Context
from atlas.ids import split_fid
from atlas.viewer_export import ct_feature_index


def _node_id(layer: int, index: int) -> str:
    return f"{layer}_{index}_0"


def graph_json(ctx: Context, slug: str, fids: list[int], edges: list[graph.EdgeRow], clicked: int | None) -> dict:
    cat = ctx.catalog
    fids = sorted(set(fids) | {e.src for e in edges} | {e.dst for e in edges})
    labels = {r["fid"]: r["description"] for r in ctx.rows(queries.FEATURE_LABELS, {"fids": fids})}
    nodes, ids = [], {}
    for fid in fids:
        s = cat.source(fid)
        index = split_fid(fid).idx
        ids[fid] = _node_id(s.layer, index)
        nodes.append(
            {
                "node_id": ids[fid],
                "feature": ct_feature_index(s.layer, index, s.d_sae),
                "layer": str(s.layer),
                "ctx_idx": 0,
                "feature_type": "cross layer transcoder",
                "jsNodeId": f"{s.layer}_{index}-0",
                "clerp": labels.get(fid) or "",
                "influence": None,
                "activation": None,
                "token_prob": 0.0,
                "is_target_logit": False,
                "run_idx": 0,
                "reverse_ctx_idx": 0,
                "atlas_id": cat.public_id(fid),
            }
        )
    links = [{"source": ids[e.src], "target": ids[e.dst], "weight": e.weight} for e in edges]
    model = cat.source(fids[0]).model_id if fids else ""
    return {
        "metadata": {
            "slug": slug,
            "scan": model,
            "prompt": "",
            "prompt_tokens": [],
            "schema_version": 1,
            "node_threshold": None,
            "info": {"generator": "atlas", "kind": "weights graph"},
        },
        "qParams": {
            "pinnedIds": [ids[f] for f in fids if clicked is None or f == clicked],
            "supernodes": [],
            "linkType": "both",
            "clickedId": ids.get(clicked, "") if clicked is not None else "",
            "sparsify": None,
        },
        "nodes": nodes,
        "links": links,
    }


def neighbourhood(ctx: Context, fid: int, kind: str, top_k: int) -> dict:
    up = graph.neighbours(ctx, fid, True, kind, None, 0, 0.0, None, top_k)
    down = graph.neighbours(ctx, fid, False, kind, None, 0, 0.0, None, top_k)
    slug = ctx.catalog.public_id(fid).replace("/", "_")
    return graph_json(ctx, slug, [fid], up + down, fid)


def path_set(ctx: Context, source: int, target: int, found: list[graph.PathRow]) -> dict:
    edges = list({(e.src, e.dst, e.variant): e for p in found for e in p.edges}.values())
    cat = ctx.catalog
    slug = f"{cat.public_id(source)}--{cat.public_id(target)}".replace("/", "_")
    return graph_json(ctx, slug, [source, target], edges, None)
