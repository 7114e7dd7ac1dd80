"""COMPUTE: the lenses' math. Tensors in, tensors out; no database, no files."""
