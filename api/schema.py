"""The GraphQL schema: the root Query and the safety extensions (docs/api.md lists the limits)."""

from __future__ import annotations

import functools

import anyio
import strawberry
from strawberry.extensions import MaskErrors, MaxTokensLimiter, ParserCache
from strawberry.scalars import JSON

from api import export, graph, queries
from api.bounded_validation import BoundedValidation
from api.errors import BadArgument, check_range, should_mask
from api.limits import ApiLimits
from api.types.connection import Connection, decode_cursor, page
from api.types.driver import Driver
from api.types.enums import EdgeKind, OutputSide, Sign
from api.types.feature import Feature
from api.types.path import Path
from api.types.stats import AtlasStats, EdgeCount, LayerCoverage
from api.types.token import Token, TokenMatch


def _fid(info, public_id: str) -> int:
    return info.context.catalog.fid(public_id)


@strawberry.type
class Query:
    @strawberry.field(description="One feature by public id model/source/index; an unknown id is an error.")
    def feature(self, info: strawberry.Info, id: strawberry.ID) -> Feature | None:
        return Feature.from_fid(info.context.catalog, _fid(info, id))

    @strawberry.field(description="Features matching every filter given, in fid order, paged by cursor.")
    def features(
        self,
        info: strawberry.Info,
        model: str | None = None,
        layer: int | None = None,
        described: bool | None = None,
        description_contains: str | None = None,
        input_token: str | None = None,
        output_token: str | None = None,
        first: int = 10,
        after: str | None = None,
    ) -> Connection[Feature]:
        ctx = info.context
        check_range("first", first, 1, ctx.limits.max_page)
        sids = None if model is None and layer is None else ctx.catalog.sids(model, None if layer is None else [layer])
        rows = ctx.rows(
            queries.FEATURE_PAGE,
            {
                "after": decode_cursor(after),
                "sids": sids,
                "described": described,
                "text": description_contains,
                "input_token": input_token,
                "output_token": output_token,
                "limit": first + 1,
            },
        )
        return page(rows, first, lambda r: r["fid"], lambda r: Feature.from_fid(ctx.catalog, r["fid"]))

    @strawberry.field(description="Features whose input tokens include the token (exact, or after trimming spaces).")
    def token_readers(
        self, info: strawberry.Info, token: str, model: str | None = None, first: int = 10, after: str | None = None
    ) -> Connection[TokenMatch]:
        return _token_features(info, token, ["input"], model, first, after)

    @strawberry.field(description="Features whose output tokens (promoted and/or suppressed) include the token.")
    def token_writers(
        self,
        info: strawberry.Info,
        token: str,
        side: OutputSide = OutputSide.BOTH,
        model: str | None = None,
        first: int = 10,
        after: str | None = None,
    ) -> Connection[TokenMatch]:
        sides = ["promoted", "suppressed"] if side == OutputSide.BOTH else [side.value]
        return _token_features(info, token, sides, model, first, after)

    @strawberry.field(
        description="Features Z reaching target X through Y (Z -> Y -> X), ranked by "
        "|w(Z->Y) * w(Y->X)|. Y is the feature `via`, or the `fanout` strongest "
        "upstream features of X in `viaLayer`, or in any layer when neither is given."
    )
    def drivers(
        self,
        info: strawberry.Info,
        target: strawberry.ID,
        via: strawberry.ID | None = None,
        via_layer: int | None = None,
        kind: EdgeKind = EdgeKind.VIRTUAL,
        variant: str | None = None,
        sign: Sign = Sign.ANY,
        top_k: int = 10,
        fanout: int = 20,
    ) -> list[Driver]:
        ctx = info.context
        via_fid = None if via is None else _fid(info, via)
        rows = graph.drivers(
            ctx, _fid(info, target), via_fid, via_layer, kind.value, variant, sign.value, top_k, fanout
        )
        return [Driver.from_row(ctx.catalog, d) for d in rows]

    @strawberry.field(
        description="Paths from source to target of up to maxHops edges, best |product| first "
        "(beam search; docs/api.md states the exact semantics)."
    )
    def paths(
        self,
        info: strawberry.Info,
        source: strawberry.ID,
        target: strawberry.ID,
        max_hops: int = 3,
        kind: EdgeKind = EdgeKind.VIRTUAL,
        variant: str | None = None,
        sign: Sign = Sign.ANY,
        fanout: int = 10,
        beam: int = 200,
        top_k: int = 10,
    ) -> list[Path]:
        ctx = info.context
        found = graph.paths(
            ctx, _fid(info, source), _fid(info, target), max_hops, kind.value, variant, sign.value, fanout, beam, top_k
        )
        return [Path.from_row(ctx.catalog, p) for p in found]

    @strawberry.field(description="Counts over the atlas and coverage per layer.")
    def stats(self, info: strawberry.Info, model: str | None = None) -> AtlasStats:
        ctx = info.context
        counts = (ctx.rows(queries.ATLAS_COUNTS))[0]
        edges = [EdgeCount(**r) for r in ctx.rows(queries.EDGE_COUNTS)]
        coverage = [LayerCoverage.from_row(r) for r in ctx.rows(queries.COVERAGE, {"model": model})]
        return AtlasStats(**counts, edges=edges, coverage=coverage)

    @strawberry.field(
        description="A feature's neighbourhood (topK upstream and downstream edges) as "
        "circuit-tracer / Neuronpedia graph JSON."
    )
    def neighbourhood_graph(
        self, info: strawberry.Info, id: strawberry.ID, kind: EdgeKind = EdgeKind.VIRTUAL, top_k: int = 10
    ) -> JSON:
        return JSON(export.neighbourhood(info.context, _fid(info, id), kind.value, top_k))  # NewType: the dict itself

    @strawberry.field(description="The paths from source to target as circuit-tracer / Neuronpedia graph JSON.")
    def path_graph(
        self,
        info: strawberry.Info,
        source: strawberry.ID,
        target: strawberry.ID,
        max_hops: int = 3,
        kind: EdgeKind = EdgeKind.VIRTUAL,
        fanout: int = 10,
        beam: int = 200,
        top_k: int = 10,
    ) -> JSON:
        ctx = info.context
        s, t = _fid(info, source), _fid(info, target)
        found = graph.paths(ctx, s, t, max_hops, kind.value, None, 0, fanout, beam, top_k)
        return JSON(export.path_set(ctx, s, t, found))


def _token_features(info, token: str, sides: list[str], model: str | None, first: int, after: str | None):
    ctx = info.context
    check_range("first", first, 1, ctx.limits.max_page)
    if not token:
        raise BadArgument("argument token is empty")
    sids = None if model is None else ctx.catalog.sids(model)
    rows = ctx.rows(
        queries.TOKEN_FEATURES,
        {"token": token, "sides": sides, "sids": sids, "after": decode_cursor(after), "limit": first + 1},
    )
    return page(
        rows,
        first,
        lambda r: r["fid"],
        lambda r: TokenMatch(feature=Feature.from_fid(ctx.catalog, r["fid"]), token=Token.from_row(r)),
    )


class AtlasSchema(strawberry.Schema):
    async def execute(self, *args, **kwargs):
        """Run the whole request synchronously in one worker thread: its SQL statements run back to
        back on that thread's cursor, with no event-loop hand-off between them."""
        return await anyio.to_thread.run_sync(functools.partial(self.execute_sync, *args, **kwargs))

    def process_errors(self, errors, execution_context=None) -> None:
        """Log unexpected errors only; a client's bad id or argument is an answer, not a server fault."""
        super().process_errors([e for e in errors if should_mask(e)], execution_context)


def build_schema(limits: ApiLimits = ApiLimits()) -> strawberry.Schema:
    # BoundedValidation measures the document once per fragment (api/measure.py) and refuses one
    # over the depth, alias, cost or size limits before graphql's own validation walks it; it
    # caches the validation of accepted documents (~2.6 ms of validation in a 4.4 ms top-k request).
    return AtlasSchema(
        query=Query,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
            lambda: BoundedValidation(limits),
            lambda: MaskErrors(should_mask_error=should_mask),
            lambda: ParserCache(maxsize=256),
        ],
    )
