"""What a CircuitLens contribution comes from: the one definition of the attribution kinds.

The integers are stored: as the first entry of a contributor key ``[kind, layer, a, b]`` in
``clusters.contributors``, and (by their lower-case name, ``label``) in ``attributions.kind``
(docs/schema.md). Existing atlases hold them, so a kind is never renumbered or renamed; a new one
takes the next integer. No torch here: the server and the describe step import it cheaply.
"""

from __future__ import annotations

from enum import IntEnum


class AttributionKind(IntEnum):
    FEATURE = 0  # an upstream transcoder feature (layer, index) at a source position
    HEAD = 1  # an attention head (layer, head) by source position (the head view)
    TOKEN = 2  # the token embedding at a source position
    POSITION = 3  # the position embedding at a source position (0 with rotary positions)
    ERROR = 4  # a layer's transcoder error (observed output - reconstruction), summed over positions
    BIAS = 5  # f(0): the linearized forward with every leaf zero
    LOGIT = 6  # output side: the effect on the token the model predicts at a later position

    @property
    def label(self) -> str:
        """The name stored in ``attributions.kind``."""
        return self.name.lower()

    @property
    def side(self) -> str:
        """``attributions.side``: 'output' for logits, 'input' for the rest."""
        return "output" if self is AttributionKind.LOGIT else "input"


KIND_LABELS = tuple(
    k.label for k in AttributionKind
)  # attributions.kind, indexed by the integer (0, 1, ... with no gaps)
KIND_SIDES = tuple(k.side for k in AttributionKind)  # attributions.side, indexed the same way
