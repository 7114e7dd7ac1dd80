"""Named SQL of the API. Every statement takes named parameters only; lists of features are
fetched with LIMIT page+1 to detect a next page. Edges are read through the adjacency lists
``edges_in`` / ``edges_out`` (migration 0002: every edge keyed by one end, ``fid``, with the
other end in ``other``; tables sorted by fid once published).
"""

# ---- one feature

FEATURE_CORE = """
SELECT w.validated, w.validation_soft, w.n_input_tokens, w.n_upstream, w.description,
       st.n_tokens, st.n_active, st.frequency, st.max_act, st.mean_act, st.quantiles, st.quantile_levels,
       st.hist_edges, st.hist_counts
FROM (SELECT 1) one
LEFT JOIN (SELECT * FROM feature_weightlens WHERE fid = $fid) w ON true
LEFT JOIN (SELECT * FROM feature_stats WHERE fid = $fid) st ON true
"""

# The activation statistics among FEATURE_CORE's columns: a feature's FeatureStats (GraphQL) and its page's "stats".
FEATURE_STATS_COLUMNS = (
    "n_tokens",
    "n_active",
    "frequency",
    "max_act",
    "mean_act",
    "quantiles",
    "quantile_levels",
    "hist_edges",
    "hist_counts",
)

SIDES = ("input", "promoted", "suppressed", "description")


def feature_tokens(sides: list[str]) -> str:
    """A feature's tokens of the given sides (a fixed vocabulary, checked, so inlined as literals)."""
    if not sides or not set(sides) <= set(SIDES):
        raise ValueError(sides)
    return f"""
    SELECT side, rank, token_id, token, score, zscore, validated FROM feature_tokens
    WHERE fid = $fid AND side IN ({", ".join(f"'{s}'" for s in sides)}) ORDER BY side, rank LIMIT $limit
    """


FEATURE_EXAMPLES = """
SELECT example_id, kind, bin, sample_weight, doc_id, pos, activation, window_start, tokens, token_strs, acts
FROM examples WHERE fid = $fid AND ($kind IS NULL OR kind = $kind)
ORDER BY activation DESC, example_id LIMIT $limit
"""

FEATURE_CLUSTERS = """
SELECT label, n_examples, contributors, summary FROM clusters WHERE fid = $fid ORDER BY label
"""

FEATURE_EXPLANATIONS = """
SELECT explanation_id, cluster_label, method, text, tokens, params, created_at FROM explanations
WHERE fid = $fid ORDER BY explanation_id
"""

FEATURE_SCORES = """
SELECT score_id, explanation_id, method, metric, value, data, params FROM scores
WHERE fid = $fid AND ($explanation_id IS NULL OR explanation_id = $explanation_id) ORDER BY score_id
"""

# descriptions of several features (graph export labels)
FEATURE_LABELS = """
SELECT fid, array_to_string(description, ', ') AS description FROM feature_weightlens
WHERE fid IN (SELECT unnest($fids::BIGINT[]))
"""

# ---- edges of one feature: `side` is edges_in (upstream) or edges_out (downstream)
# Optional filters are composed into the statement only when given: a `($x IS NULL OR ...)`
# predicate made DuckDB plan a late-materialization join (2.2 ms instead of 0.8 ms per top-k).


def edge_filter(variant: bool, sign: bool) -> str:
    parts = ["kind = $kind"]
    if variant:
        parts.append("variant = $variant")
    if sign:
        parts.append("sign(weight) = $sign")
    return " AND ".join(parts)


def neighbours(
    side: str, variant: bool = False, sign: bool = False, min_weight: bool = False, layers: bool = False
) -> str:
    if side not in ("edges_in", "edges_out"):
        raise ValueError(side)
    extra = (" AND abs(weight) >= $min_weight" if min_weight else "") + (
        " AND list_contains($sids, fid_source(other))" if layers else ""
    )
    return f"""
    SELECT other, variant, weight, rel_contribution FROM {side}
    WHERE fid = $fid AND {edge_filter(variant, sign)}{extra}
    ORDER BY abs(weight) DESC, other LIMIT $limit
    """


# ---- drivers of X via Y: Z -> Y -> X, ranked by |w(Z->Y) * w(Y->X)| ($sign: of the product)


def drivers_via_feature(variant: bool = False, sign: bool = False) -> str:
    f = edge_filter(variant, False)
    return f"""
    WITH second AS (
        SELECT variant, weight AS w2, rel_contribution AS r2 FROM edges_in
        WHERE fid = $target AND other = $via AND {f}
    ), first AS (
        SELECT variant, other AS z, weight AS w1, rel_contribution AS r1 FROM edges_in
        WHERE fid = $via AND {f}
    )
    SELECT z, $via::BIGINT AS y, variant, w1, r1, w2, r2, w1 * w2 AS product
    FROM first JOIN second USING (variant)
    {"WHERE sign(w1 * w2) = $sign" if sign else ""}
    ORDER BY abs(product) DESC, z LIMIT $limit
    """


def drivers_via_layer(variant: bool = False, sign: bool = False, layer: bool = False) -> str:
    """Via a layer (or any layer): the $fanout strongest Y -> X, then all Z -> Y."""
    f = edge_filter(variant, False)
    return f"""
    WITH second AS (
        SELECT variant, other AS y, weight AS w2, rel_contribution AS r2 FROM edges_in
        WHERE fid = $target AND {f} {"AND list_contains($sids, fid_source(other))" if layer else ""}
        ORDER BY abs(weight) DESC, other LIMIT $fanout
    ), first AS (
        SELECT variant, fid AS y, other AS z, weight AS w1, rel_contribution AS r1 FROM edges_in
        WHERE fid IN (SELECT y FROM second) AND {f}
    )
    SELECT z, y, variant, w1, r1, w2, r2, w1 * w2 AS product
    FROM first JOIN second USING (variant, y)
    {"WHERE sign(w1 * w2) = $sign" if sign else ""}
    ORDER BY abs(product) DESC, z, y LIMIT $limit
    """


# ---- one hop of the path beam: from each frontier node, its $fanout strongest edges (of the
# requested sign) into allowed intermediate sources, plus its edge into the target if it has one.


def path_hop(variant: bool = False, sign: bool = False) -> str:
    return f"""
    SELECT fid AS src, other AS dst, variant, weight, rel_contribution FROM edges_out
    WHERE fid IN (SELECT unnest($frontier::BIGINT[])) AND {edge_filter(variant, sign)}
      AND (other = $target OR list_contains($sids, fid_source(other)))
    QUALIFY other = $target
         OR row_number() OVER (PARTITION BY fid, variant, other = $target ORDER BY abs(weight) DESC, other) <= $fanout
    """


# ---- lists of features (cursor pagination on fid)

FEATURE_PAGE = """
SELECT f.fid FROM features f
LEFT JOIN feature_weightlens w ON w.fid = f.fid
WHERE f.fid > $after
  AND ($sids IS NULL OR list_contains($sids, f.sid))
  AND ($described IS NULL OR (coalesce(len(w.description), 0) > 0) = $described)
  AND ($text IS NULL
       OR contains(lower(array_to_string(w.description, ' ')), lower($text))
       OR f.fid IN (SELECT fid FROM explanations WHERE contains(lower(text), lower($text))))
  AND ($input_token IS NULL OR f.fid IN (
        SELECT fid FROM feature_tokens
        WHERE side = 'input' AND (token = $input_token OR trim(token) = trim($input_token))))
  AND ($output_token IS NULL OR f.fid IN (
        SELECT fid FROM feature_tokens WHERE side IN ('promoted', 'suppressed')
        AND (token = $output_token OR trim(token) = trim($output_token))))
ORDER BY f.fid LIMIT $limit
"""

# readers (input side) / writers (promoted, suppressed) of a token, paged on fid
TOKEN_FEATURES = """
SELECT fid, side, rank, token_id, token, score, zscore, validated FROM feature_tokens
WHERE list_contains($sides, side) AND (token = $token OR trim(token) = trim($token))
  AND fid > $after AND ($sids IS NULL OR list_contains($sids, fid_source(fid)))
QUALIFY row_number() OVER (PARTITION BY fid ORDER BY rank, side) = 1
ORDER BY fid LIMIT $limit
"""

# ---- the whole atlas

ATLAS_COUNTS = """
SELECT (SELECT count(*) FROM models) AS n_models, (SELECT count(*) FROM sources) AS n_sources,
       (SELECT count(*) FROM features) AS n_features, (SELECT count(*) FROM examples) AS n_examples,
       (SELECT count(*) FROM explanations) AS n_explanations, (SELECT count(*) FROM clusters) AS n_clusters
"""

EDGE_COUNTS = "SELECT kind, count(*) AS n FROM edges GROUP BY kind ORDER BY kind"

COVERAGE = """
SELECT model_id, source_id, layer, n_features, n_described, n_validated, n_alive, n_explained
FROM coverage_per_layer WHERE ($model IS NULL OR model_id = $model) ORDER BY model_id, layer
"""
