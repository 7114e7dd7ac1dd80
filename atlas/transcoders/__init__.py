"""ENTER: transcoders from every published file format, as one in-memory ``TranscoderSet``."""

from atlas.transcoders.transcoder_set import LayerTranscoder, TranscoderSet

__all__ = ["LayerTranscoder", "TranscoderSet"]
