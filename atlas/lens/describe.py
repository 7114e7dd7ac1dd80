"""Descriptions of a feature's clusters from their evidence (docs/method.md §4.5).

Algorithm:
1. ``summarize`` turns a cluster's members into evidence: the tokens at which the feature fires,
   the driving source tokens (the source position with the largest input contribution) with their
   offset and a short snippet where the source is marked <<...>> and the target [[...]], the shared
   upstream features (with their own descriptions where the atlas has them), the shared heads,
   and the tokens the feature promotes at the next positions.
2. ``template`` writes a structured sentence from that evidence, with no network; ``merge``
   joins a feature's cluster sentences into one description.
3. Optionally ``llm_describe`` sends the same evidence to an OpenAI-compatible chat-completions
   endpoint (the paper's explainer step) and returns the text with the exact prompt, so the
   prompt and the model's name are stored with the explanation.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from atlas.errors import AtlasError
from atlas.lens.kinds import AttributionKind

SYSTEM_PROMPT = (
    "You explain features of a language model's transcoders. You get evidence about one mechanism "
    "by which a feature activates: the tokens it fires on, the earlier tokens that drive it (in "
    "snippets, source marked <<...>>, activating token [[...]]), upstream features and the tokens "
    "it promotes next. Answer with one short phrase describing when the feature fires."
)


def snippet(tokens: list[str], target: int, source: int, width: int = 6) -> str:
    lo, hi = max(0, min(source, target) - width), min(len(tokens), target + 3)
    parts = []
    for i in range(lo, hi):
        t = tokens[i]
        parts.append(f"[[{t}]]" if i == target else f"<<{t}>>" if i == source else t)
    return "".join(parts)


def summarize(members: list[dict], contributors: list[tuple[tuple, int]], descriptions: dict,
              n_top: int = 5) -> dict:
    """Evidence of one cluster.

    members: dicts with 'target_token', 'source_token', 'offset', 'snippet', 'outputs' (list of str);
    contributors: ((kind, layer, a, b), n_members) of the cluster's shared contributors (kind an
    AttributionKind: FEATURE with a = index, or HEAD with a = head, b = offset);
    descriptions: (layer, index) -> text for upstream features.
    """
    n = len(members)
    count = lambda key: [{"token": t, "count": c} for t, c in Counter(m[key] for m in members).most_common(n_top)]
    sources = Counter((m["source_token"], m["offset"]) for m in members).most_common(n_top)
    outputs = Counter(t for m in members for t in m["outputs"][:1]).most_common(n_top)
    upstream, heads = [], []
    for (kind, layer, a, b), c in contributors:
        if kind == AttributionKind.FEATURE:
            upstream.append({"layer": layer, "index": a, "share": c / max(n, 1),
                             "description": descriptions.get((layer, a))})
        else:
            heads.append({"layer": layer, "head": a, "offset": b, "share": c / max(n, 1)})
    return {
        "n_examples": n,
        "target_tokens": count("target_token"),
        "source_tokens": [{"token": t, "offset": o, "count": c} for (t, o), c in sources],
        "snippets": [m["snippet"] for m in members[:3]],
        "upstream": sorted(upstream, key=lambda u: -u["share"])[:n_top],
        "heads": sorted(heads, key=lambda h: -h["share"])[:n_top],
        "output_tokens": [{"token": t, "count": c} for t, c in outputs],
    }


def _q(tokens) -> str:
    return ", ".join(repr(t["token"]) for t in tokens)


def template(summary: dict) -> str:
    parts = [f"fires on {_q(summary['target_tokens'][:3])}" if summary["target_tokens"] else "fires"]
    src = [s for s in summary["source_tokens"][:3] if s["offset"] != 0]
    if src:
        parts.append("driven by " + ", ".join(f"{s['token']!r} {-s['offset']} tokens earlier" for s in src))
    if summary["upstream"]:
        parts.append("via upstream features " + ", ".join(
            f"L{u['layer']}/{u['index']}" + (f" ({u['description']})" if u["description"] else "")
            for u in summary["upstream"][:3]))
    if summary["heads"]:
        parts.append("through heads " + ", ".join(f"L{h['layer']}.H{h['head']} (offset {h['offset']})"
                                                for h in summary["heads"][:3]))
    if summary["output_tokens"]:
        parts.append(f"promotes {_q(summary['output_tokens'][:3])}")
    return "; ".join(parts)


def merge(texts: dict[int, str], n_noise: int) -> str:
    """One feature description from its clusters' descriptions (label -> text)."""
    real = {k: v for k, v in sorted(texts.items()) if k >= 0}
    if not real:
        return f"no shared mechanism ({n_noise} unclustered examples)"
    if len(real) == 1:
        return next(iter(real.values()))
    return f"{len(real)} mechanisms: " + " | ".join(f"({i + 1}) {t}" for i, t in enumerate(real.values()))


def llm_describe(summary: dict, url: str, model: str, timeout_s: float = 60.0,
                 api_key_env: str = "ATLAS_EXPLAINER_API_KEY") -> tuple[str, str]:
    """(text, prompt) from an OpenAI-compatible chat-completions endpoint at ``url``."""
    import httpx

    prompt = "Evidence:\n" + json.dumps(summary, indent=1, ensure_ascii=False)
    headers = {"Authorization": f"Bearer {os.environ[api_key_env]}"} if os.environ.get(api_key_env) else {}
    body = {"model": model, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]}
    try:
        r = httpx.post(url.rstrip("/") + "/chat/completions", json=body, headers=headers, timeout=timeout_s)
        r.raise_for_status()
        text = r.json()["choices"][0]["message"]["content"].strip()
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise AtlasError(f"explainer endpoint {url!r} (model {model!r}) failed: {exc}") from exc
    return text, SYSTEM_PROMPT + "\n\n" + prompt
