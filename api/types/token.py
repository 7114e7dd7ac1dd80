"""A token of a feature: an input token (WeightLens, W_E f_enc) or an output token (f_dec W_U)."""

from __future__ import annotations

import strawberry

from api.types.rows import from_columns


@strawberry.type(description="A token in a feature's input or output token list.")
class Token:
    side: str = strawberry.field(description="'input', 'promoted', 'suppressed' or 'description'.")
    rank: int = strawberry.field(description="0 = strongest.")
    token_id: int | None
    token: str
    score: float | None = strawberry.field(description="Raw projection score.")
    zscore: float | None
    validated: bool | None = strawberry.field(description="Isolation check (input side only).")

    @classmethod
    def from_row(cls, r: dict) -> Token:
        return from_columns(cls, r)


from typing import TYPE_CHECKING, Annotated  # noqa: E402

if TYPE_CHECKING:
    from api.types.feature import Feature


@strawberry.type(description="A feature that reads (input side) or writes (output side) a token.")
class TokenMatch:
    feature: Annotated[Feature, strawberry.lazy("api.types.feature")]
    token: Token
