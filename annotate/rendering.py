"""Safe rendering of model text (prompts, responses, guidelines) as HTML.

Two independent layers, so one bug is not enough for script to run:

1. markdown-it-py with raw HTML *off*: `<script>` or `<img onerror=...>` in a
   response is escaped and shown as text (annotators must be able to read
   what the model wrote, including its HTML). Images become plain links so a
   response cannot make the annotator's browser fetch a tracking pixel.
2. nh3 (the Rust ammonia sanitizer) on the produced HTML, with an allow-list
   of tags and attributes and only http, https and mailto links; anything
   else (``javascript:``, ``data:``, ``vbscript:``) loses its ``href``.

The label screen also sends a strict Content-Security-Policy (see views), a
third layer that would block inline script even if both of these failed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# fmt: off
ALLOWED_TAGS: frozenset[str] = frozenset({
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a",
    "table", "thead", "tbody", "tr", "th", "td",
})
# fmt: on
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
    "code": {"class"},
}
URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
# A 2 MB response renders in well under a second; beyond that the raw view is
# more useful than a formatted wall of text, and the page stays responsive.
MAX_MARKDOWN_CHARS = 200_000


def _render_image_as_link(self: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
    """Render `![alt](src)` as a visible link instead of an <img> fetch."""
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    return f'<a href="{escape(src)}">[image: {escape(alt)}]</a>'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # Built lazily (no work at import time) and reused: parser construction is
    # the expensive part. "html": False is the first XSS layer.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _render_image_as_link)
    return md


@lru_cache(maxsize=1)
def _cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def sanitize_html(html: str) -> str:
    """Run nh3 with our allow-list over an HTML fragment."""
    return _cleaner().clean(html)


def render_markdown(text: str | None) -> SafeString:
    """Model or lead text -> sanitized HTML, safe to insert in a page."""
    if not text:
        return mark_safe("")
    if len(text) > MAX_MARKDOWN_CHARS:
        return mark_safe(f'<pre class="plain">{escape(text)}</pre>')
    # mark_safe is justified: the string is nh3's output, not the input.
    return mark_safe(sanitize_html(_markdown().render(text)))
