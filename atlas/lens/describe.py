"""Descriptions of a feature's clusters from their evidence (docs/method.md §4.5).

Algorithm:
1. ``summarize`` turns a cluster's members into evidence: the tokens at which the feature fires,
   the driving source tokens (the source position with the largest input contribution) with their
   offset and a short snippet where the source is marked <<...>> and the target [[...]], the shared
   upstream features (with their own descriptions where the atlas has them), the shared heads,
   and the tokens the feature promotes at the next positions.
2. ``template`` writes a structured sentence from that evidence, with no network; ``merge``
   joins a feature's cluster sentences into one description.
3. Optionally an explainer model describes the same evidence (the paper's explainer step):
   ``chat_request`` builds the OpenAI chat-completions request and the exact prompt (stored with the
   explanation, with the model's name), ``parse_chat_reply`` reads the answer. The HTTP client that
   sends it is ingest/explainer.py: this module computes only.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import NamedTuple

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


def summarize(members: list[dict], contributors: list[tuple[tuple, int]], descriptions: dict, n_top: int = 5) -> dict:
    """Evidence of one cluster.

    members: dicts with 'target_token', 'source_token', 'offset', 'snippet', 'outputs' (list of str);
    contributors: ((kind, layer, a, b), n_members) of the cluster's shared contributors (kind an
    AttributionKind: FEATURE with a = index, or HEAD with a = head, b = offset);
    descriptions: (layer, index) -> text for upstream features.
    """
    n = len(members)

    def count(key):
        return [{"token": t, "count": c} for t, c in Counter(m[key] for m in members).most_common(n_top)]

    sources = Counter((m["source_token"], m["offset"]) for m in members).most_common(n_top)
    outputs = Counter(t for m in members for t in m["outputs"][:1]).most_common(n_top)
    upstream, heads = [], []
    for (kind, layer, a, b), c in contributors:
        if kind == AttributionKind.FEATURE:
            upstream.append(
                {"layer": layer, "index": a, "share": c / max(n, 1), "description": descriptions.get((layer, a))}
            )
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
        parts.append(
            "via upstream features "
            + ", ".join(
                f"L{u['layer']}/{u['index']}" + (f" ({u['description']})" if u["description"] else "")
                for u in summary["upstream"][:3]
            )
        )
    if summary["heads"]:
        parts.append(
            "through heads "
            + ", ".join(f"L{h['layer']}.H{h['head']} (offset {h['offset']})" for h in summary["heads"][:3])
        )
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


class ChatRequest(NamedTuple):
    body: dict  # the JSON body of POST {url}/chat/completions: model, temperature 0, system + user messages
    prompt: str  # the exact prompt it carries (system prompt, blank line, evidence), stored with the explanation


def chat_request(summary: dict, model: str) -> ChatRequest:
    """The chat-completions request asking explainer ``model`` to describe one cluster's evidence."""
    evidence = "Evidence:\n" + json.dumps(summary, indent=1, ensure_ascii=False)
    body = {
        "model": model,
        "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": evidence}],
    }
    return ChatRequest(body, SYSTEM_PROMPT + "\n\n" + evidence)


def parse_chat_reply(reply) -> str:
    """The answer text of a chat-completions reply (``choices[0].message.content``), stripped;
    ValueError when the reply has not that shape."""
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"the reply has no choices[0].message.content ({type(exc).__name__}: {exc})") from None
    if not isinstance(text, str):
        raise ValueError(f"the reply's choices[0].message.content is {text!r}, not text")
    return text.strip()
