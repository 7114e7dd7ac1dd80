"""ENTER: transcoders from every published file format, as one in-memory ``TranscoderSet``.

Importing this package is cheap (no torch); the loaders import torch / sae_lens when called.
"""

from atlas.transcoders.loading import FORMATS, PRESETS, Preset, TranscoderSpec, load_transcoders
from atlas.transcoders.saelens_format import save_saelens
from atlas.transcoders.transcoder_set import LayerTranscoder, TranscoderSet

__all__ = [
    "FORMATS",
    "PRESETS",
    "LayerTranscoder",
    "Preset",
    "TranscoderSet",
    "TranscoderSpec",
    "load_transcoders",
    "save_saelens",
]
