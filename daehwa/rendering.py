"""Markdown (model replies) and plain text (user messages) to safe HTML, on the server.

Pipeline: markdown-it-py (CommonMark + tables + strikethrough, raw HTML *off*, images off) -> Pygments highlights
fenced code with CSS classes -> nh3 (ammonia) sanitises the result against a small allowlist. The sanitiser is the
last step on purpose: whatever the parser or highlighter gets wrong, only allowlisted tags, attributes, classes and
``http``/``https``/``mailto`` links reach the page. No ``style`` attribute survives, because the page's CSP forbids
inline styles (table alignment becomes a class). Images are not rendered at all: an ``<img>`` pointing elsewhere
would make the page send a request off the machine, which the chat page promises never to do.

    render_markdown("**hi** `x`")     -> '<p><strong>hi</strong> <code>x</code></p>\\n'
    render_plain("a <b>\\nb")          -> '<p>a &lt;b&gt;<br>\\nb</p>'
    highlight_css()                   -> the Pygments class rules for the light and dark themes
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

__all__ = ["highlight_css", "render_markdown", "render_message", "render_plain"]

# Code longer than this is shown escaped but not highlighted: Pygments is linear but not free, and a 1 MB paste
# should not cost the server a second per render.
MAX_HIGHLIGHT_CHARS = 100_000
_LANG_OK = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")
_ALIGN = re.compile(r"text-align:(left|center|right)")
_TOKEN_CLASSES = frozenset(c for c in STANDARD_TYPES.values() if c)

_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a", "span", "div",
}  # fmt: skip


class MarkdownRenderer:
    """One configured parser + highlighter + sanitiser. Stateless after construction, so one can be shared."""

    def __init__(self) -> None:
        md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
        md.enable(["table", "strikethrough"])
        md.disable(["image"])  # "![a](u)" stays text: see the module docstring
        self._formatter = HtmlFormatter(nowrap=True)
        formatter = self._formatter

        # markdown-it binds render rules to its renderer (``rule.__get__(renderer)``): plain functions only.
        def fence(renderer: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
            return _fence(formatter, tokens[idx])

        md.add_render_rule("fence", fence)
        md.add_render_rule("code_block", fence)
        md.add_render_rule("th_open", _cell)
        md.add_render_rule("td_open", _cell)
        self._md = md
        self._cleaner = nh3.Cleaner(
            tags=_TAGS,
            clean_content_tags={"script", "style"},
            attributes={"a": {"href", "title"}, "ol": {"start"}, "div": {"data-lang"}},
            allowed_classes={
                "span": set(_TOKEN_CLASSES),
                "div": {"codeblock"},
                "th": {"align-left", "align-center", "align-right"},
                "td": {"align-left", "align-center", "align-right"},
            },
            set_tag_attribute_values={"a": {"target": "_blank"}},
            link_rel="noopener noreferrer nofollow",
            url_schemes={"http", "https", "mailto"},
            # A relative link in a reply would point at this service's own routes ("/api/..."): refuse them.
            url_relative="deny",
        )

    def render(self, text: str) -> str:
        return self._cleaner.clean(self._md.render(text))

    def clean(self, fragment: str) -> str:
        return self._cleaner.clean(fragment)


def _fence(formatter: HtmlFormatter[str], token: Token) -> str:
    info = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
    lang = info if _LANG_OK.fullmatch(info) else ""
    code = token.content
    body = html.escape(code, quote=False)
    lexer = _lexer(lang.lower()) if lang and len(code) <= MAX_HIGHLIGHT_CHARS else None
    if lexer is not None:
        body = highlight(code, lexer, formatter)
    label = f' data-lang="{html.escape(lang)}"' if lang else ""
    return f'<div class="codeblock"{label}><pre><code>{body}</code></pre></div>\n'


@functools.lru_cache(maxsize=256)
def _lexer(lang: str) -> Lexer | None:
    # Looking a lexer up by name scans Pygments' registry (~2 ms); lexers keep no state between uses, so reuse them.
    try:
        return get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _cell(renderer: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    match = _ALIGN.fullmatch(str(token.attrGet("style") or ""))
    cls = f' class="align-{match.group(1)}"' if match else ""
    return f"<{token.tag}{cls}>"


@functools.cache
def _renderer() -> MarkdownRenderer:
    # Built on first use (not at import): the parser and sanitiser cost a few milliseconds to set up.
    return MarkdownRenderer()


#: Replies up to this long are cached; with the entry limit this bounds the cache (worst case ~1024 x 16k chars in and
#: the HTML out, some 50 MB) however long the replies users ask for.
_CACHED_CHARS = 16_000


def render_markdown(text: str) -> str:
    """Markdown -> sanitised HTML (cached: a conversation re-opened renders from memory)."""
    if len(text) > _CACHED_CHARS:
        return _renderer().render(text)
    return _render_cached(text)


@functools.lru_cache(maxsize=1024)
def _render_cached(text: str) -> str:
    return _renderer().render(text)


def render_plain(text: str) -> str:
    """Plain text -> escaped HTML paragraphs, line breaks kept (how user messages are shown)."""
    paragraphs = re.split(r"\n{2,}", text.strip("\n"))
    out = []
    for para in paragraphs:
        out.append("<p>" + "<br>\n".join(html.escape(line, quote=False) for line in para.split("\n")) + "</p>")
    # Through the sanitiser as well, so the one allowlist is the single guarantee for everything shown.
    return _renderer().clean("\n".join(out))


def render_message(role: str, content: str) -> str:
    """The HTML shown for a stored message: Markdown for the assistant, plain text for everyone else."""
    return render_markdown(content) if role == "assistant" else render_plain(content)


@functools.cache
def highlight_css() -> str:
    """Pygments rules for code blocks: the light theme, and the dark one (GitHub dark) under ``[data-theme="dark"]``."""
    light = HtmlFormatter(style="default").get_token_style_defs(':root:not([data-theme="dark"]) .codeblock')
    dark = HtmlFormatter(style="github-dark").get_token_style_defs('[data-theme="dark"] .codeblock')
    return "/* Generated by Pygments at run time. */\n" + "\n".join([*light, *dark]) + "\n"
