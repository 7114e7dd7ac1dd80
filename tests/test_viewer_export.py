"""`atlas export`: circuit-tracer feature files and Neuronpedia JSONL from a real atlas file, each
checked against a schema written from those projects' own definitions (circuit-tracer's
frontend/feature_models.py and graph_models.Node.feature_node; Neuronpedia's webapp prisma models
Neuron, Activation, Explanation) and against SQL on the same file."""

from __future__ import annotations

import json
import math

import duckdb
import pages_atlas as pa
import pytest
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from atlas.errors import NotFoundError
from atlas.viewer_export import ct_feature_index, export


# ---- circuit-tracer's feature file (frontend/feature_models.py: Example, ExamplesQuantile, Model)
class CTExample(BaseModel):
    tokens_acts_list: list[float]
    train_token_ind: StrictInt
    is_repeated_datapoint: StrictBool
    tokens: list[StrictStr]


class CTQuantile(BaseModel):
    quantile_name: StrictStr
    examples: list[CTExample]


class CTFeature(BaseModel):
    transcoder_id: StrictStr
    index: StrictInt
    examples_quantiles: list[CTQuantile]
    top_logits: list[StrictStr]
    bottom_logits: list[StrictStr]
    act_min: float
    act_max: float
    quantile_values: list[float]
    histogram: list[float]
    activation_frequency: float


# ---- Neuronpedia's tables (prisma: Neuron, Activation, Explanation; layer and index are strings)
class NPNeuron(BaseModel):
    model_config = ConfigDict(extra="allow")
    modelId: StrictStr
    layer: StrictStr
    index: StrictStr
    maxActApprox: StrictFloat
    frac_nonzero: StrictFloat
    pos_str: list[StrictStr]
    pos_values: list[StrictFloat]
    neg_str: list[StrictStr]
    neg_values: list[StrictFloat]
    freq_hist_data_bar_heights: list[StrictFloat]
    freq_hist_data_bar_values: list[StrictFloat]
    hookName: StrictStr | None


class NPActivation(BaseModel):
    model_config = ConfigDict(extra="allow")
    modelId: StrictStr
    layer: StrictStr
    index: StrictStr
    tokens: list[StrictStr]
    values: list[StrictFloat]
    maxValue: StrictFloat
    maxValueTokenIndex: StrictInt
    minValue: StrictFloat
    dataIndex: StrictStr | None


class NPExplanation(BaseModel):
    model_config = ConfigDict(extra="allow")
    modelId: StrictStr
    layer: StrictStr
    index: StrictStr
    description: StrictStr
    typeName: StrictStr | None
    explanationModelName: StrictStr | None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return pa.build(tmp_path_factory.mktemp("export-atlas"))


@pytest.fixture(scope="module")
def sql(hostile):
    con = duckdb.connect(str(hostile[0]), read_only=True)
    yield lambda q, p=None: con.execute(q, p or {}).fetchall()
    con.close()


def test_feature_number_is_circuit_tracers():
    # graph_models.Node.feature_node: feat_idx + 10 ** ceil(log10(num_features)) * layer
    for layer, idx, d in [(2, 5, 64), (11, 24575, 24576), (0, 7, 16384), (25, 3, 2**15)]:
        assert ct_feature_index(layer, idx, d) == idx + 10 ** math.ceil(math.log10(d)) * layer
    assert ct_feature_index(11, 24575, 24576) == 1_124_575


def test_circuit_tracer_feature_files(hostile, sql, tmp_path):
    public = hostile[2]
    r = export(hostile[1], tmp_path, "circuit-tracer", ids=[public, "gpt2-small/3-synth/1"])
    assert (r.features, r.files) == (2, 3)
    idx = int(public.rsplit("/", 1)[1])
    path = tmp_path / "features" / "gpt2-small" / f"{200 + idx}.json"
    raw = json.loads(path.read_text())
    f = CTFeature.model_validate(raw)
    assert f.index == 200 + idx and raw["atlas_id"] == public and f.transcoder_id == "gpt2-small/2-synth"
    top = next(q for q in f.examples_quantiles if q.quantile_name == "Top activations")
    assert [e.tokens_acts_list for e in top.examples] == [pa.TOP_ACTS, [a * 0.75 for a in pa.TOP_ACTS]]
    assert all(e.train_token_ind == 3 and e.tokens[1] == pa.SCRIPT for e in top.examples)  # text kept as data
    assert sum(len(q.examples) for q in f.examples_quantiles) == 4
    fid = sql("SELECT fid FROM feature_ids WHERE public_id = $p", {"p": public})[0][0]
    promoted = [
        t
        for (t,) in sql(
            "SELECT token FROM feature_tokens WHERE fid = $f AND side = 'promoted' ORDER BY rank", {"f": fid}
        )
    ]
    assert f.top_logits == promoted and f.top_logits[0] == pa.JSURL
    assert f.histogram == [float(c) for c in pa.HIST_COUNTS] and f.act_max == 2.0 and f.act_min == 0.0
    assert json.loads((tmp_path / "features" / "gpt2-small" / "index.json").read_text()) == {
        str(200 + idx): public,
        "301": "gpt2-small/3-synth/1",
    }
    CTFeature.model_validate_json((tmp_path / "features" / "gpt2-small" / "301.json").read_text())


def test_neuronpedia_jsonl_whole_atlas(hostile, sql, tmp_path):
    r = export(hostile[1], tmp_path, "neuronpedia")
    lines = {
        k: [json.loads(x) for x in (tmp_path / f"{k}.jsonl").read_text().splitlines()]
        for k in ("features", "activations", "explanations")
    }
    n_described = sql("SELECT count(*) FROM feature_weightlens WHERE len(description) > 0")[0][0]
    assert len(lines["features"]) == r.features == sql("SELECT count(*) FROM features")[0][0] == 256
    assert len(lines["activations"]) == r.activations == sql("SELECT count(*) FROM examples")[0][0]
    assert len(lines["explanations"]) == r.explanations == n_described + sql("SELECT count(*) FROM explanations")[0][0]
    for row in lines["features"]:
        NPNeuron.model_validate(row)
    for row in lines["activations"]:
        a = NPActivation.model_validate(row)
        assert len(a.tokens) == len(a.values) and a.values[a.maxValueTokenIndex] == a.maxValue == max(a.values)
    for row in lines["explanations"]:
        NPExplanation.model_validate(row)
    idx = hostile[2].rsplit("/", 1)[1]
    mine = [x for x in lines["explanations"] if x["layer"] == "2-synth" and x["index"] == idx]
    assert {x["typeName"] for x in mine} == {"atlas-weightlens", "atlas-llm"}
    llm = next(x for x in mine if x["typeName"] == "atlas-llm")
    assert pa.SCRIPT in llm["description"] and llm["scores"][0]["value"] == 0.875
    feat = next(x for x in lines["features"] if x["layer"] == "2-synth" and x["index"] == idx)
    assert feat["pos_str"][0] == pa.JSURL and feat["freq_hist_data_bar_heights"] == [float(c) for c in pa.HIST_COUNTS]


def test_export_cli_selection_and_errors(hostile, cli, tmp_path):
    p = cli("export", "neuronpedia", "--db", str(hostile[1]), "--out", str(tmp_path), "--layers", "2", "--limit", "5")
    assert "exported 5 features" in p.stdout
    rows = [json.loads(x) for x in (tmp_path / "features.jsonl").read_text().splitlines()]
    assert [x["index"] for x in rows] == ["0", "1", "2", "3", "4"] and {x["layer"] for x in rows} == {"2-synth"}
    bad = cli(
        "export",
        "circuit-tracer",
        "--db",
        str(hostile[1]),
        "--out",
        str(tmp_path / "x"),
        "--feature",
        "gpt2-small/2-synth/9999",
        check=False,
    )
    assert bad.returncode != 0 and "gpt2-small/2-synth/9999" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    with pytest.raises(NotFoundError, match="layers"):
        export(hostile[1], tmp_path / "y", "neuronpedia", layers=[40])
    bad = cli("export", "svg", "--db", str(hostile[1]), "--out", str(tmp_path / "z"), check=False)
    assert bad.returncode != 0 and "circuit-tracer, neuronpedia" in bad.stdout + bad.stderr
