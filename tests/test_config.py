"""Configuration: `--set NAME=VALUE` overrides parsed by the dataclasses' type hints, for every job, and the
validation every config runs when built (Literal choices, numeric bounds)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import pytest

from atlas.config import (
    ActivationsConfig,
    AssetsConfig,
    CircuitLensConfig,
    ComputeConfig,
    CorpusConfig,
    DemoConfig,
    ScoringConfig,
    TrainConfig,
    WeightLensConfig,
    with_overrides,
)
from atlas.errors import AtlasError


def test_bool_false_is_false():
    # the old parser did bool('False') == True
    assert with_overrides(ActivationsConfig(), ["skip_first=False"]).skip_first is False
    assert with_overrides(ActivationsConfig(skip_first=False), ["skip_first=true"]).skip_first is True
    assert with_overrides(ActivationsConfig(), ["era=0"]).era is False


def test_optional_fields_take_none_or_their_type():
    # the old parser called type(None)('...') and raised TypeError
    cfg = with_overrides(CircuitLensConfig(), ["max_features_per_layer=12", "explainer_url=http://x/v1"])
    assert cfg.max_features_per_layer == 12 and cfg.explainer_url == "http://x/v1"
    assert with_overrides(cfg, ["max_features_per_layer=None"]).max_features_per_layer is None
    assert with_overrides(ActivationsConfig(), ["edge_variant=raw"]).edge_variant == "raw"
    assert with_overrides(DemoConfig(), ["data_dir=/tmp/x"]).data_dir == Path("/tmp/x")


def test_numbers_and_tuples():
    cfg = with_overrides(WeightLensConfig(), ["input_z=4", "edge_pool=50"])
    assert cfg.input_z == 4.0 and isinstance(cfg.input_z, float) and cfg.edge_pool == 50
    assert with_overrides(TrainConfig(), ["layers=0,3,6"]).layers == (0, 3, 6)
    assert with_overrides(ActivationsConfig(), ["quantile_levels=0.5,0.9"]).quantile_levels == (0.5, 0.9)


@dataclass(frozen=True)
class _Choice:
    mode: Literal["a", "b"] = "a"
    k: int | None = None


def test_literal_and_union_errors_name_field_value_and_type():
    assert with_overrides(_Choice(), ["mode=b"]).mode == "b"
    with pytest.raises(AtlasError, match=r"field 'mode' expects one of 'a', 'b', got 'c'"):
        with_overrides(_Choice(), ["mode=c"])
    with pytest.raises(AtlasError, match=r"field 'k' expects int \| None, got 'x'"):
        with_overrides(_Choice(), ["k=x"])


@pytest.mark.parametrize(
    "config, text, expected",
    [
        (ActivationsConfig(), "skip_first=maybe", "bool"),
        (WeightLensConfig(), "edge_pool=1.5", "int"),
        (ScoringConfig(), "batch_size=", "int"),
        (TrainConfig(), "lr=fast", "float"),
    ],
)
def test_bad_values_are_refused_with_the_expected_type(config, text, expected):
    name, _, value = text.partition("=")
    with pytest.raises(AtlasError, match=rf"field '{name}' expects {expected}, got '{value}'"):
        with_overrides(config, [text])


def test_unknown_field_and_missing_equals_are_refused():
    with pytest.raises(AtlasError, match="is not NAME=VALUE"):
        with_overrides(ScoringConfig(), ["nope=1"])
    with pytest.raises(AtlasError, match="is not NAME=VALUE"):
        with_overrides(ScoringConfig(), ["batch_size"])


def test_every_field_of_every_job_config_round_trips_its_default():
    """Each default, written as text, parses back to itself: every field has a parseable hint."""
    for config in (
        WeightLensConfig(),
        ActivationsConfig(),
        CircuitLensConfig(),
        ScoringConfig(),
        TrainConfig(),
        DemoConfig(),
    ):
        for f in fields(config):
            value = getattr(config, f.name)
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert getattr(with_overrides(config, [f"{f.name}={text}"]), f.name) == value, (type(config), f.name)


@pytest.mark.parametrize("job", ["activations", "circuitlens", "scores"])
def test_cli_refuses_a_bad_setting_before_loading_anything(cli, tmp_path, job):
    field = {"activations": "skip_first", "circuitlens": "eps", "scores": "batch_size"}[job]
    proc = cli(
        "ingest",
        job,
        str(tmp_path / "a.duckdb"),
        "--model",
        "random:tiny",
        "--transcoders",
        f"saelens:{tmp_path / 'missing'}",
        "--text",
        "builtin",
        "--set",
        f"{field}=nope",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"field '{field}' expects" in proc.stderr and "'nope'" in proc.stderr
    assert not (tmp_path / "a.duckdb").exists()


# ---- validation when a config is built -------------------------------------------------------------

JOB_CONFIGS = (
    ComputeConfig,
    WeightLensConfig,
    ActivationsConfig,
    CircuitLensConfig,
    ScoringConfig,
    AssetsConfig,
    CorpusConfig,
    TrainConfig,
    DemoConfig,
)


def test_every_default_configuration_is_valid():
    for cls in JOB_CONFIGS:
        cls()
    TrainConfig.gpu()


def _choice_fields():
    """(class, field, allowed values) for every field typed as a Literal choice (or a tuple / Optional of one)."""
    from typing import get_args, get_origin, get_type_hints

    for cls in JOB_CONFIGS:
        for name, hint in get_type_hints(cls).items():
            if get_origin(hint) is tuple:
                hint = get_args(hint)[0]
            arms = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) is not Literal else [hint]
            if arms and all(get_origin(a) is Literal for a in arms):
                yield cls, name, get_args(arms[0])


@pytest.mark.parametrize("cls, name, allowed", list(_choice_fields()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_choice_outside_its_literal_is_refused_naming_field_value_and_choices(cls, name, allowed):
    bad = ("nope",) if isinstance(getattr(cls(), name), tuple) else "nope"
    with pytest.raises(AtlasError) as err:
        cls(**{name: bad})
    assert f"{cls.__name__}.{name}='nope' is not one of " in str(err.value)
    assert all(repr(a) in str(err.value) for a in allowed)


def test_the_choices_are_typed_as_literals():
    typed = {(cls.__name__, name) for cls, name, _ in _choice_fields()}
    assert {
        ("WeightLensConfig", "edge_sign"),
        ("WeightLensConfig", "token_zmode"),
        ("ActivationsConfig", "bin_mode"),
        ("ActivationsConfig", "edge_variant"),
        ("CircuitLensConfig", "example_kinds"),
        ("ScoringConfig", "method"),
        ("AssetsConfig", "converted_dtype"),
        ("ComputeConfig", "dtype"),
    } <= typed


@pytest.mark.parametrize(
    "cls, name, value, interval",
    [
        (TrainConfig, "lr", 0.0, "(0, inf)"),
        (TrainConfig, "d_sae", 0, "[1, inf)"),
        (TrainConfig, "layers", (3, -1), "[0, inf)"),
        (WeightLensConfig, "edge_pool", 1, "[2, inf)"),
        (WeightLensConfig, "dedup_word_ratio", 1.5, "[0, 1]"),
        (ActivationsConfig, "quantile_levels", (0.5, 2.0), "[0, 1]"),
        (ActivationsConfig, "batch_size", -3, "[1, inf)"),
        (CircuitLensConfig, "eps", 0.0, "(0, inf)"),
        (CircuitLensConfig, "max_features_per_layer", 0, "[1, inf)"),
        (CorpusConfig, "heldout_fraction", 1.0, "[0, 1)"),
        (DemoConfig, "port", 70000, "[0, 65535]"),
        (ScoringConfig, "seq_len", 0, "[1, inf)"),
    ],
)
def test_a_number_out_of_its_bounds_is_refused(cls, name, value, interval):
    shown = value[-1] if isinstance(value, tuple) else value
    with pytest.raises(
        AtlasError, match=re.escape(f"{cls.__name__}.{name}={shown!r} is out of range: it must lie in {interval}")
    ):
        cls(**{name: value})


def test_bounds_hold_at_their_edges_and_none_passes():
    assert CorpusConfig(heldout_fraction=0.0).heldout_fraction == 0.0
    assert CircuitLensConfig(max_features_per_layer=None, min_rel_contribution=1.0).max_features_per_layer is None
    assert WeightLensConfig(edge_pool=2).edge_pool == 2 and DemoConfig(port=0).port == 0


def test_overrides_are_validated_too():
    with pytest.raises(AtlasError, match=r"TrainConfig\.epochs=0 is out of range"):
        with_overrides(TrainConfig(), ["epochs=0"])
    with pytest.raises(AtlasError, match=r"ActivationsConfig\.hist_max=1e-05 must be above hist_min"):
        with_overrides(ActivationsConfig(), ["hist_max=1e-5"])


def test_every_bounded_field_exists():
    for cls in JOB_CONFIGS:
        names = {f.name for f in fields(cls)}
        assert set(getattr(cls, "BOUNDS", {})) <= names, cls
