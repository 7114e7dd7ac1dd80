"""atlas: a database-backed atlas of transcoder features (WeightLens + CircuitLens).

Data flow: models.py / transcoders/ / corpus.py (ENTER) -> lens/ (COMPUTE) -> db.py, publish.py (STORE)
-> api/ (SERVE). This package imports neither `ingest` nor `api` (tests/test_layering.py), and nothing
heavy at import time.
"""

__version__ = "0.1.0"
