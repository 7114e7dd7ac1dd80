"""`--set NAME=VALUE` overrides: parsed by the config dataclasses' type hints, for every job."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import pytest

from atlas.config import (ActivationsConfig, CircuitLensConfig, DemoConfig, ScoringConfig, TrainConfig,
                          WeightLensConfig, with_overrides)
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


@pytest.mark.parametrize("config, text, expected", [
    (ActivationsConfig(), "skip_first=maybe", "bool"),
    (WeightLensConfig(), "edge_pool=1.5", "int"),
    (ScoringConfig(), "batch_size=", "int"),
    (TrainConfig(), "lr=fast", "float"),
])
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
    for config in (WeightLensConfig(), ActivationsConfig(), CircuitLensConfig(), ScoringConfig(), TrainConfig(),
                   DemoConfig()):
        for f in fields(config):
            value = getattr(config, f.name)
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert getattr(with_overrides(config, [f"{f.name}={text}"]), f.name) == value, (type(config), f.name)


@pytest.mark.parametrize("job", ["activations", "circuitlens", "scores"])
def test_cli_refuses_a_bad_setting_before_loading_anything(cli, tmp_path, job):
    field = {"activations": "skip_first", "circuitlens": "eps", "scores": "batch_size"}[job]
    proc = cli("ingest", job, str(tmp_path / "a.duckdb"), "--model", "random:tiny", "--transcoders",
               f"saelens:{tmp_path / 'missing'}", "--text", "builtin", "--set", f"{field}=nope", check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"field '{field}' expects" in proc.stderr and "'nope'" in proc.stderr
    assert not (tmp_path / "a.duckdb").exists()
