"""atlas/corpus.py: local text sources, BOS-prefixed fixed-length sequences, a deterministic held-out split."""

from __future__ import annotations

import json

import pytest

from atlas.config import CorpusConfig
from atlas.corpus import Corpus, heldout
from atlas.errors import AssetError


def make(tiny_model, source, **kw) -> Corpus:
    return Corpus.for_model(tiny_model, CorpusConfig(source=str(source), seq_len=32, **kw))


def test_sequences_start_with_bos_and_have_fixed_length(tiny_model, text_corpus):
    corpus = make(tiny_model, text_corpus(), heldout_fraction=0.2)
    batches = list(corpus.batches("train", batch_size=8, n_tokens=32 * 20))
    tokens = __import__("torch").cat(batches)
    assert tokens.shape == (20, 32)
    assert (tokens[:, 0] == 50256).all()  # GPT-2's BOS
    assert (tokens[:, 1:] != 50256).all()  # no BOS inside the text
    text = tiny_model.tokenizer.decode(tokens[0, 1:])
    assert "Document" in text or "." in text


def test_all_three_file_types_are_read(tiny_model, text_corpus):
    directory = text_corpus(n_docs=30)
    docs = list(make(tiny_model, directory).documents("all"))
    assert len(docs) == 30
    # each file alone gives its own third
    assert len(list(make(tiny_model, directory / "a.txt").documents("all"))) == 10
    assert len(list(make(tiny_model, directory / "b.jsonl").documents("all"))) == 10
    assert len(list(make(tiny_model, directory / "c.parquet").documents("all"))) == 10


def test_heldout_split_is_disjoint_deterministic_and_order_free(tiny_model, text_corpus):
    directory = text_corpus(n_docs=90)
    corpus = make(tiny_model, directory, heldout_fraction=0.3)
    train, held = set(corpus.documents("train")), set(corpus.documents("heldout"))
    assert train and held and not train & held
    assert len(train) + len(held) == 90
    assert 10 <= len(held) <= 45  # ~30 % of 90, by hash
    # the same document text lands on the same side in a differently ordered source
    docs = list(corpus.documents("all"))
    shuffled = directory.parent / "shuffled.jsonl"
    shuffled.write_text("".join(json.dumps({"text": t}) + "\n" for t in reversed(docs)))
    assert set(make(tiny_model, shuffled, heldout_fraction=0.3).documents("heldout")) == held
    assert all(heldout(t, 0.3) for t in held)


def test_empty_corpus_is_a_clear_error(tiny_model, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(AssetError, match="no train text"):
        list(make(tiny_model, tmp_path / "empty.txt").sequences("train"))
    (tmp_path / "none").mkdir()
    with pytest.raises(AssetError, match="no .txt, .jsonl, .parquet files"):
        list(make(tiny_model, tmp_path / "none").sequences("train"))


def test_missing_path_and_bad_jsonl_are_clear_errors(tiny_model, tmp_path):
    with pytest.raises(AssetError, match="no corpus file or directory"):
        list(make(tiny_model, tmp_path / "missing.txt").documents())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(AssetError, match="has no 'text' field"):
        list(make(tiny_model, bad).documents())
    bad.write_text("not json\n")
    with pytest.raises(AssetError, match="bad.jsonl:1 is not JSON"):
        list(make(tiny_model, bad).documents())


def test_builtin_without_assets_says_to_run_make_assets(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AssetError, match="make assets"):
        list(make(tiny_model, "builtin").documents())


def test_unreachable_hf_dataset_is_a_clear_error(tiny_model):
    # offline (HF_HUB_OFFLINE=1): the hub path fails with a message naming the dataset
    with pytest.raises(AssetError, match="could not be streamed as a Hugging Face dataset"):
        list(make(tiny_model, "no-such-user/no-such-dataset").documents())
