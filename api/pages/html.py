"""Safe HTML: every piece of data is escaped unless it is already ``Html`` built here.

Token strings, descriptions and LLM explanations are untrusted text. They only ever reach a page
through ``tag`` (children and attribute values escaped, ``html.escape`` with quotes) or ``esc``;
links are built by ``href`` from path segments (each percent-encoded) and query parameters, so
a page never writes a scheme such as ``javascript:`` taken from the data. Pages carry no inline
script or style; ``CSP`` (sent with every page) forbids them, so even an escaping bug could not run.
"""

from __future__ import annotations

import html
from urllib.parse import quote, urlencode

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class Html(str):
    """A string that is already safe HTML."""


def esc(value) -> Html:
    return value if isinstance(value, Html) else Html(html.escape("" if value is None else str(value), quote=True))


def join(parts) -> Html:
    return Html("".join(esc(p) for p in parts))


VOID = {"br", "input", "meta", "link", "img"}


def tag(name: str, /, *children, **attrs) -> Html:
    """<name attrs>children</name>; attribute names end in '_' to dodge keywords (class_, for_)."""
    a = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None and v is not False
    )
    if name in VOID:
        return Html(f"<{name}{a}>")
    return Html(f"<{name}{a}>{join(_flatten(children))}</{name}>")


def _flatten(children):
    for c in children:
        if isinstance(c, (list, tuple)):
            yield from _flatten(c)
        elif c is not None:
            yield c


def href(*segments, **params) -> str:
    """A same-site link: '/' + percent-encoded segments (+ '?' + params without None values)."""
    path = "/" + "/".join(quote(str(s), safe="") for s in segments)
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return path + ("?" + query if query else "")


def feature_href(public_id: str) -> str:
    model, source, index = public_id.split("/")
    return href("feature", model, source, index)


def page(
    title: str, *body, json_href: str | None = None, scripts: tuple[str, ...] = (), styles: tuple[str, ...] = ()
) -> Html:
    head = [
        tag("meta", charset="utf-8"),
        tag("title", title + " · atlas"),
        tag("link", rel="stylesheet", href="/assets/atlas.css"),
        *[tag("link", rel="stylesheet", href=s) for s in styles],
    ]
    nav = tag(
        "header",
        tag("a", tag("b", "atlas"), href="/"),
        tag("a", "GraphiQL", href="/graphql"),
        tag("a", "JSON of this page", href=json_href, class_="json") if json_href else None,
        tag(
            "form",
            tag("input", name="q", placeholder="token, description or feature id", size="36"),
            tag("button", "search", type="submit"),
            action="/",
            method="get",
        ),
        class_="top",
    )
    return Html(
        "<!doctype html>"
        + tag("html", tag("head", *head), tag("body", nav, *body, *[tag("script", src=s) for s in scripts]), lang="en")
    )
