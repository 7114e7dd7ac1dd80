"""Model loading from every kind of spec, and clear errors for bad ones."""

from __future__ import annotations

import pytest
import torch

from atlas.errors import ModelLoadError
from atlas.models import ModelSpec, bos_token_id, describe, load_model, token_strings


def test_random_model_has_the_real_gpt2_tokenizer(tiny_model):
    assert tiny_model.to_tokens("Hello world").tolist() == [[50256, 15496, 995]]
    assert bos_token_id(tiny_model) == 50256
    assert token_strings(tiny_model, [15496, 995]) == ["Hello", " world"]
    assert describe(tiny_model)["d_vocab"] == 50257


def test_random_models_are_reproducible_by_seed():
    a = load_model(ModelSpec.parse("random:tiny", seed=3))
    b = load_model(ModelSpec.parse("random:tiny", seed=3))
    assert torch.equal(a.W_E, b.W_E)


def test_converted_directory_round_trip(tiny_model, tmp_path):
    """save_converted writes what load_converted (the spec 'default') rebuilds: same weights, same logits."""
    from atlas.models import load_converted, save_converted

    save_converted(tiny_model, tmp_path, "float32")
    with pytest.raises(ModelLoadError, match="no converted model .*make assets"):
        load_converted(tmp_path)  # not marked complete (atlas assets marks it last)
    (tmp_path / "complete").write_text("{}")
    back = load_converted(tmp_path)
    tokens = tiny_model.to_tokens("The river bank")
    assert torch.equal(back.W_E, tiny_model.W_E) and back.to_tokens("The river bank").tolist() == tokens.tolist()
    assert torch.allclose(back(tokens), tiny_model(tokens), atol=1e-5)


def test_hf_directory_loads_offline_and_matches_transformers(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from atlas.models import gpt2_tokenizer

    # saved by save_pretrained unchanged: transformers 5 writes no n_ctx, which TransformerLens reads
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64))
    hf.eval().save_pretrained(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    gpt2_tokenizer().save_pretrained(tmp_path)
    model = load_model(f"hf-dir:{tmp_path}")
    tokens = model.to_tokens("The capital of France is")
    with torch.no_grad():
        assert torch.allclose(model(tokens), hf(tokens).logits, atol=1e-4)
    assert model.cfg.n_ctx == 64  # from n_positions
    assert (tmp_path / "config.json").read_text() == saved  # the directory is not touched


@pytest.mark.parametrize(
    "text, match",
    [
        ("gpt2", "not KIND:VALUE"),
        ("onnx:/x", "not KIND:VALUE"),
        ("random:huge", "unknown random model shape"),
    ],
)
def test_bad_specs_are_named(text, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(text)


def test_missing_and_malformed_files_are_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="no GGUF file"):
        load_model(f"gguf:{tmp_path / 'missing.gguf'}")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"NOTGGUF" * 10)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(f"gguf:{fake}")
    with pytest.raises(ModelLoadError, match="not a Hugging Face model directory"):
        load_model(f"hf-dir:{tmp_path}")
