"""Post-processing of a WeightLens description (a list of token strings) into readable terms.

Implements docs/method.md §2.7.

1. Lower-case and strip each token string; drop empty results (whitespace-only tokens).
2. Drop punctuation characters from a term unless the term is all punctuation (then keep it).
3. Lemmatize words with lemminflect (offline: it ships its data), as a noun first (the reference's
   NLTK WordNet lemmatizer defaults to nouns), then as a verb; unknown words stay as they are.
4. Group near-duplicates greedily in description order: a term joins the first kept representative
   whose difflib ratio exceeds 0.85 (words) or 0.6 (all-punctuation terms); only representatives
   are kept.
"""

from __future__ import annotations

import string
from difflib import SequenceMatcher
from functools import lru_cache

PUNCT = set(string.punctuation) | set("“”‘’«»…–—")


def is_punct(term: str) -> bool:
    return bool(term) and all(ch in PUNCT for ch in term)


@lru_cache(maxsize=200_000)
def normalize(token: str) -> str:
    """One token string -> its normalized term ('' when nothing is left)."""
    t = token.lower().strip()
    if not t or is_punct(t):
        return t
    t = "".join(ch for ch in t if ch not in PUNCT).strip()
    if not t:
        return ""
    return lemmatize(t)


@lru_cache(maxsize=200_000)
def lemmatize(word: str) -> str:
    if not word.isalpha():
        return word
    from lemminflect import getLemma

    for upos in ("NOUN", "VERB"):
        lemmas = getLemma(word, upos=upos, lemmatize_oov=False)
        if lemmas:
            return lemmas[0]
    return word


def group_terms(terms: list[str], word_ratio: float = 0.85, punct_ratio: float = 0.6) -> list[str]:
    """Greedy near-duplicate grouping; returns one representative per group, in order."""
    reps: list[str] = []
    for term in terms:
        limit = punct_ratio if is_punct(term) else word_ratio
        if not any(term == r or SequenceMatcher(None, term, r).ratio() > limit for r in reps):
            reps.append(term)
    return reps


def postprocess(tokens: list[str], word_ratio: float = 0.85, punct_ratio: float = 0.6) -> list[str]:
    """Token strings of a description -> its post-processed terms."""
    terms = [t for t in (normalize(tok) for tok in tokens) if t]
    return group_terms(terms, word_ratio, punct_ratio)
