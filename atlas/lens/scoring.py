"""Scoring token-set descriptions with no LLM (docs/method.md §5): does "current token in the
description" predict "feature active" on held-out text?

Algorithm (one layer's features at a time; held-out tokens arrive in batches):
1. A description is a set of vocabulary ids per feature (``membership_pairs``: a token is a member
   when its stripped, lower-cased string is one of the description's terms).
2. Per batch, the member entries (position, feature) are found by a join of the pairs with the
   batch's tokens (sort by token id, ``searchsorted``, expand); active entries are the non-zero
   activations. Counts: members, actives, members that are active; values kept: every member's
   activation and the non-zero activations of non-members (sparse, never a dense matrix).
3. precision = P(active | member), recall = P(member | active), and AUROC of the activation as a
   score for membership, by Mann-Whitney: for each member value v, the non-members below v plus
   half of those equal (the many exact zeros counted in closed form), in one sorted search over
   composite keys feature * S + value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def normalize(text: str) -> str:
    return text.strip().lower()


def membership_pairs(terms: dict[int, list[str]], vocab: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature [n], token_id [n]) for every vocabulary token whose normalized string is a term."""
    by_string: dict[str, list[int]] = {}
    for i, s in enumerate(vocab):
        by_string.setdefault(normalize(s), []).append(i)
    feats, toks = [], []
    for f, words in terms.items():
        ids = sorted({i for w in words for i in by_string.get(normalize(w), []) if normalize(w)})
        feats += [f] * len(ids)
        toks += ids
    return torch.tensor(feats, dtype=torch.long), torch.tensor(toks, dtype=torch.long)


def member_entries(tokens: torch.Tensor, pair_feature: torch.Tensor, pair_token: torch.Tensor):
    """(position [m], feature [m]) with tokens[position] in feature's description. tokens [n]."""
    order = torch.argsort(tokens)
    sorted_tok = tokens[order]
    lo = torch.searchsorted(sorted_tok, pair_token)
    hi = torch.searchsorted(sorted_tok, pair_token, right=True)
    n = hi - lo
    feature = torch.repeat_interleave(pair_feature, n)
    start = torch.repeat_interleave(lo, n)
    offset = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    return order[start + offset], feature


@dataclass
class TokenScores:
    precision: torch.Tensor  # [d_sae] NaN where no member token occurs
    recall: torch.Tensor  # [d_sae] NaN where the feature never fires
    auroc: torch.Tensor  # [d_sae] NaN where either class is empty
    n_member: torch.Tensor  # [d_sae]
    n_active: torch.Tensor  # [d_sae]


class TokenScorer:
    def __init__(self, d_sae: int, pair_feature: torch.Tensor, pair_token: torch.Tensor):
        self.d_sae, self.pf, self.pt = d_sae, pair_feature, pair_token
        self.n = 0
        self.n_member = torch.zeros(d_sae, dtype=torch.long)
        self.n_active = torch.zeros(d_sae, dtype=torch.long)
        self.tp = torch.zeros(d_sae, dtype=torch.long)
        self.member_vals: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.other_vals: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, tokens: torch.Tensor, acts: torch.Tensor) -> None:
        """tokens [n], acts [n, d_sae] for the same positions."""
        self.n += tokens.numel()
        pos, feat = member_entries(tokens, self.pf, self.pt)
        v = acts[pos, feat]
        self.n_member += torch.bincount(feat, minlength=self.d_sae)
        self.tp += torch.bincount(feat[v > 0], minlength=self.d_sae)
        self.member_vals.append((feat, v.double()))
        p, f = acts.nonzero(as_tuple=True)
        self.n_active += torch.bincount(f, minlength=self.d_sae)
        key = p * self.d_sae + f
        member = torch.isin(key, pos * self.d_sae + feat)
        self.other_vals.append((f[~member], acts[p[~member], f[~member]].double()))

    def result(self) -> TokenScores:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        mf, mv = (
            (torch.cat(x) for x in zip(*self.member_vals))
            if self.member_vals
            else (torch.zeros(0, dtype=torch.long),) * 2
        )
        of, ov = (
            (torch.cat(x) for x in zip(*self.other_vals))
            if self.other_vals
            else (torch.zeros(0, dtype=torch.long),) * 2
        )
        mv, ov = mv.double(), ov.double()
        n_other = self.n - self.n_member
        zeros_other = (n_other - torch.bincount(of, minlength=self.d_sae)).double()  # [d_sae]
        S = float(max(mv.max().item() if mv.numel() else 0.0, ov.max().item() if ov.numel() else 0.0)) + 1.0
        keys = torch.sort(of.double() * S + ov).values
        q = mf.double() * S + mv
        less = torch.searchsorted(keys, q) - torch.searchsorted(keys, mf.double() * S, right=True)
        equal = torch.searchsorted(keys, q, right=True) - torch.searchsorted(keys, q)
        u = torch.where(mv > 0, zeros_other[mf] + less + 0.5 * equal, 0.5 * zeros_other[mf])
        U = torch.zeros(self.d_sae, dtype=torch.float64).index_add_(0, mf, u)
        denom = (self.n_member * n_other).double()
        return TokenScores(
            precision=torch.where(self.n_member > 0, self.tp / self.n_member.clamp(min=1), nan),
            recall=torch.where(self.n_active > 0, self.tp / self.n_active.clamp(min=1), nan),
            auroc=torch.where(denom > 0, U / denom.clamp(min=1), nan),
            n_member=self.n_member,
            n_active=self.n_active,
        )
