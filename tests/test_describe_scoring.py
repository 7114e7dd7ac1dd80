"""Descriptions (template and an OpenAI-compatible explainer on loopback) and token-membership
scores (docs/method.md §4.5, §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from atlas.errors import AtlasError
from atlas.lens.describe import merge, snippet, summarize, template
from atlas.lens.scoring import TokenScorer, member_entries, membership_pairs
from ingest.explainer import Explainer

MEMBERS = [
    {"target_token": " bank", "source_token": " river", "offset": -2, "snippet": "x", "outputs": [" shore", " water"]}
    for _ in range(4)
] + [{"target_token": " banks", "source_token": " river", "offset": -2, "snippet": "y", "outputs": [" shore"]}]
CONTRIB = [((0, 0, 17, 0), 5), ((1, 1, 2, -2), 4)]


def test_template_description_from_evidence():
    s = summarize(MEMBERS, CONTRIB, {(0, 17): "water words"})
    assert s["target_tokens"][0] == {"token": " bank", "count": 4}
    assert s["source_tokens"][0] == {"token": " river", "offset": -2, "count": 5}
    assert s["upstream"][0]["description"] == "water words" and s["heads"][0]["offset"] == -2
    text = template(s)
    for part in (
        "' bank'",
        "' river' 2 tokens earlier",
        "L0/17 (water words)",
        "L1.H2 (offset -2)",
        "promotes ' shore'",
    ):
        assert part in text
    assert merge({0: "a", 1: "b", -1: "noise"}, 3) == "2 mechanisms: (1) a | (2) b"
    assert merge({-1: "noise"}, 3).startswith("no shared mechanism")
    assert snippet(["a", "b", "c", "d"], 3, 1) == "a<<b>>c[[d]]"


def test_explainer_endpoint_on_loopback(chat_server, monkeypatch):
    url, seen = chat_server
    monkeypatch.setenv("ATLAS_EXPLAINER_API_KEY", "k123")
    s = summarize(MEMBERS, CONTRIB, {})
    text, prompt = Explainer(url, "tiny-explainer").describe(s)
    path, body, auth = seen[-1]
    assert text == "river banks" and path == "/v1/chat/completions" and auth == "Bearer k123"
    assert body["model"] == "tiny-explainer" and body["temperature"] == 0
    assert body["messages"][1]["content"] in prompt and '"token": " river"' in body["messages"][1]["content"]
    with pytest.raises(AtlasError, match="broken"):
        Explainer(url, "broken", backoff_s=0.01).describe(s)  # HTTP 500, retried, then an error


def test_token_membership_scores_equal_sklearn():
    gen = torch.Generator().manual_seed(0)
    N, F = 300, 6
    tokens = torch.randint(0, 12, (N,), generator=gen)
    acts = torch.relu(torch.randn(N, F, generator=gen))
    acts = torch.where(acts < 0.4, torch.zeros(()), torch.round(acts * 4) / 4)  # many ties and zeros
    terms = {0: ["a", "B "], 1: ["c"], 3: ["d", "e", "f"], 4: ["zz"]}
    vocab = ["a", "b", "c", "d", "e", "f", " A", "g", "h", "i", "j", "k"]
    pf, pt = membership_pairs(terms, vocab)
    assert sorted(pt[pf == 0].tolist()) == [0, 1, 6]  # ' A' and 'b' match after normalizing
    scorer = TokenScorer(F, pf, pt)
    for chunk in torch.arange(N).split(70):
        scorer.update(tokens[chunk], acts[chunk])
    res = scorer.result()
    for f in range(F):
        member = np.isin(tokens.numpy(), pt[pf == f].numpy())
        active = acts[:, f].numpy() > 0
        if member.any() and not member.all():
            assert res.auroc[f].item() == pytest.approx(roc_auc_score(member, acts[:, f].numpy()))
            assert res.precision[f].item() == pytest.approx(precision_score(active, member))
            assert res.recall[f].item() == pytest.approx(recall_score(active, member))
        else:
            assert np.isnan(res.auroc[f].item())
    assert np.isnan(res.precision[2].item()) and int(res.n_member[4]) == 0


def test_member_entries_by_hand():
    pos, feat = member_entries(torch.tensor([5, 3, 5, 1]), torch.tensor([0, 1, 1]), torch.tensor([5, 5, 1]))
    assert sorted(zip(pos.tolist(), feat.tolist())) == [(0, 0), (0, 1), (2, 0), (2, 1), (3, 1)]
