"""Named SQL the pages need beyond api/queries.py (which they share with the GraphQL API).
Every list is bounded: LIMIT from a checked page size, OFFSET from a checked page number."""

MODELS = "SELECT model_id, loader, n_layers, d_model, d_vocab FROM models ORDER BY model_id"

# transcoder quality per layer (ingest/transcoders.py, method 'reconstruction')
QUALITY = """
SELECT s.model_id, s.source_id, m.metric, m.value FROM source_metrics m JOIN sources s USING (sid)
WHERE m.method = 'reconstruction' AND m.metric IN ('fve', 'l0', 'dead_share')
"""

# one page of a feature's examples of one kind
EXAMPLES_PAGE = """
SELECT example_id, kind, bin, doc_id, pos, activation, window_start, token_strs, acts
FROM examples WHERE fid = $fid AND kind = $kind
ORDER BY activation DESC, example_id LIMIT $limit OFFSET $offset
"""

# the strongest members of each cluster of a feature
CLUSTER_MEMBERS = """
SELECT m.label, e.example_id, e.pos, e.activation, e.window_start, e.token_strs, e.acts
FROM cluster_members m JOIN examples e ON e.example_id = m.example_id
WHERE m.fid = $fid
QUALIFY row_number() OVER (PARTITION BY m.label ORDER BY e.activation DESC, e.example_id) <= $per_cluster
ORDER BY m.label, e.activation DESC, e.example_id
"""
