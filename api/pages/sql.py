"""Named SQL the pages need beyond api/queries.py (which they share with the GraphQL API).
Every list is bounded: LIMIT from a checked page size, OFFSET from a checked page number."""

MODELS = "SELECT model_id, loader, n_layers, d_model, d_vocab FROM models ORDER BY model_id"

# transcoder quality per layer (ingest/transcoders.py, method 'reconstruction')
QUALITY = """
SELECT s.model_id, s.source_id, m.metric, m.value FROM source_metrics m JOIN sources s USING (sid)
WHERE m.method = 'reconstruction' AND m.metric IN ('fve', 'l0', 'dead_share')
"""

# one page of a feature's top examples and one of its quantile examples, in one statement
EXAMPLES_PAGES = """
(SELECT example_id, kind, bin, doc_id, pos, activation, window_start, token_strs, acts
 FROM examples WHERE fid = $fid AND kind = 'top'
 ORDER BY activation DESC, example_id LIMIT $limit OFFSET $top_offset)
UNION ALL
(SELECT example_id, kind, bin, doc_id, pos, activation, window_start, token_strs, acts
 FROM examples WHERE fid = $fid AND kind = 'quantile'
 ORDER BY activation DESC, example_id LIMIT $limit OFFSET $quantile_offset)
"""

# a feature's input, promoted and suppressed tokens: the $limit strongest of each side
FEATURE_TOKENS = """
SELECT side, rank, token_id, token, score, zscore, validated FROM feature_tokens
WHERE fid = $fid AND side IN ('input', 'promoted', 'suppressed')
QUALIFY row_number() OVER (PARTITION BY side ORDER BY rank) <= $limit
ORDER BY side = 'input' DESC, side, rank
"""

# the strongest members of each cluster of a feature
CLUSTER_MEMBERS = """
SELECT m.label, e.example_id, e.pos, e.activation, e.window_start, e.token_strs, e.acts
FROM cluster_members m JOIN examples e ON e.example_id = m.example_id
WHERE m.fid = $fid
QUALIFY row_number() OVER (PARTITION BY m.label ORDER BY e.activation DESC, e.example_id) <= $per_cluster
ORDER BY m.label, e.activation DESC, e.example_id
"""

# Search (the index page). The same matches as the API's TOKEN_FEATURES / FEATURE_PAGE(text), written
# so that DuckDB stops at the first rows in fid order instead of ranking every match first:
# token rows in (fid, rank, side) order, the first of each fid kept by the caller (data.token_search);
# `token = $t OR trim(token) = trim($t)` is `trim(token) = trim($t)`.
SIDES_SQL = {"readers": "'input'", "writers": "'promoted', 'suppressed'"}


def token_rows(by: str) -> str:
    return f"""
    SELECT fid, side, rank, token, score FROM feature_tokens
    WHERE side IN ({SIDES_SQL[by]}) AND trim(token) = trim($token) AND fid > $after
    ORDER BY fid, rank, side LIMIT $limit
    """


TEXT_MATCHES = """
SELECT fid FROM (
    (SELECT fid FROM feature_weightlens WHERE fid > $after
       AND contains(lower(array_to_string(description, ' ')), lower($text)) ORDER BY fid LIMIT $limit)
    UNION
    (SELECT fid FROM explanations WHERE fid > $after AND contains(lower(text), lower($text)) ORDER BY fid LIMIT $limit)
) ORDER BY fid LIMIT $limit
"""
