"""Register what a job computes over: the model and one source per transcoder layer.

Every ingest job calls ``register`` first; it returns ``{layer: sid}`` (see atlas/ids.py).
"""

from __future__ import annotations

from atlas.ids import source_id

# The columns of a source row that are the layer transcoder's attributes of the same names.
LAYER_COLUMNS = (
    "layer",
    "d_in",
    "d_out",
    "d_sae",
    "hook_in",
    "hook_out",
    "activation",
    "has_skip",
    "dtype",
    "format",
    "uri",
)


def register(writer, model, tset, *, model_id: str, model_spec: str | None = None) -> dict[int, int]:
    """Upsert the model row and a source row per layer of ``tset``; returns ``{layer: sid}``."""
    from atlas.models import describe

    loader = model_spec.partition(":")[0] if model_spec else "random"
    writer.upsert_model(
        dict(
            model_id=model_id,
            tl_name=getattr(model.cfg, "model_name", None),
            loader=loader,
            uri=model_spec,
            **describe(model),
        )
    )
    return {
        tc.layer: writer.upsert_source(
            dict(
                model_id=model_id,
                source_id=source_id(tc.layer, tset.set_name),
                set_name=tset.set_name,
                **{name: getattr(tc, name) for name in LAYER_COLUMNS},
            )
        )
        for tc in tset
    }
