"""Markdown -> safe HTML: what renders, and that no payload survives the sanitiser.

The browser tests (tests/test_web_browser.py) check the same payloads execute nothing in a real page; these tests pin
the HTML itself so a regression is caught fast and explained precisely.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daehwa.rendering import highlight_css, render_markdown, render_message, render_plain

PAYLOADS = [
    "<script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=1>",
    '<svg onload="window.__xss=1"><circle r=1 /></svg>',
    "<svg><script>window.__xss=1</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>",
    '<a href="javascript:window.__xss=1">x</a>',
    "[click](javascript:window.__xss=1)",
    "[click](JaVaScRiPt:window.__xss=1)",
    "[click](java\tscript:window.__xss=1)",
    "[click](&#106;avascript:window.__xss=1)",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox)",
    '[click](https://ok.example "title" onmouseover="window.__xss=1")',
    "[ref]\n\n[ref]: javascript:window.__xss=1",
    "<javascript:window.__xss=1>",
    "![x](javascript:window.__xss=1)",
    '![x" onerror="window.__xss=1](https://x.example/a.png)',
    '<iframe src="https://evil.example"></iframe>',
    '<div style="background:url(javascript:alert(1))">x</div>',
    "```\n</code></pre><script>window.__xss=1</script>\n```",
    '```"><img src=x onerror=window.__xss=1>\ncode\n```',
    "<style>body{display:none}</style>",
    '<form action="https://evil.example"><input name=x></form>',
    '<object data="javascript:alert(1)"></object><embed src="javascript:alert(1)">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="https://evil.example/">',
]

SAFE_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a", "span", "div",
}  # fmt: skip
SAFE_ATTRS = {"href", "title", "target", "rel", "class", "start", "data-lang"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def active_html(out: str) -> list[str]:
    """What in ``out`` a browser could act on: unknown tags, unknown attributes, non-web links."""
    parser = _Tags()
    parser.feed(out)
    parser.close()
    problems = []
    for tag, attrs in parser.found:
        if tag not in SAFE_TAGS:
            problems.append(f"<{tag}>")
        for name, value in attrs:
            if name not in SAFE_ATTRS:
                problems.append(f"<{tag} {name}>")
            if name == "href" and not re.match(r"(https?|mailto):", value or ""):
                problems.append(f"<{tag} href={value!r}>")
    return problems


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("render", [render_markdown, render_plain], ids=["markdown", "plain"])
def test_payloads_leave_no_executable_html(render, payload):
    out = render(payload)
    assert active_html(out) == [], out


def test_the_checker_itself_sees_active_html():
    assert active_html('<img src=x onerror="a()"><a href="javascript:x">y</a><p style="x">') == [
        "<img>", "<img src>", "<img onerror>", "<a href='javascript:x'>", "<p style>",
    ]  # fmt: skip


def test_raw_html_is_shown_as_text_not_markup():
    out = render_markdown("Hello <b>there</b> <script>x()</script>")
    assert "&lt;b&gt;there&lt;/b&gt;" in out
    assert "&lt;script&gt;x()&lt;/script&gt;" in out


def test_links_get_safe_rel_and_open_elsewhere():
    out = render_markdown("[docs](https://example.com/a?b=1&c=2) and <mailto:a@b.example>")
    assert (
        '<a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer nofollow">docs</a>' in out
    )
    assert 'href="mailto:a@b.example"' in out


def test_relative_links_lose_their_href():
    # A reply must not be able to point the user at this service's own routes.
    out = render_markdown("[log out](/api/auth/logout) [here](#x) [up](../x)")
    assert "href" not in out
    assert "log out" in out


def test_images_are_not_rendered_so_nothing_is_fetched_from_elsewhere():
    out = render_markdown("![tracker](https://tracker.example/pixel.png)")
    assert "<img" not in out
    assert "tracker" in out


def test_code_fence_is_highlighted_with_classes_and_labelled():
    out = render_markdown('```python\ndef f(x):\n    return "<b>"\n```')
    assert out.startswith('<div class="codeblock" data-lang="python"><pre><code>')
    assert '<span class="k">def</span>' in out
    assert "&lt;b&gt;" in out
    assert "style=" not in out


def test_unknown_or_hostile_fence_language_is_plain_code():
    out = render_markdown("```nosuchlang\nx = 1\n```")
    assert '<div class="codeblock" data-lang="nosuchlang"><pre><code>x = 1\n</code></pre></div>' in out
    hostile = render_markdown('```py"onload=x\nx\n```')
    assert "data-lang" not in hostile
    assert "onload" not in hostile


def test_indented_code_is_a_codeblock_without_language():
    assert render_markdown("    x < 1\n") == '<div class="codeblock"><pre><code>x &lt; 1\n</code></pre></div>\n'


def test_huge_code_is_escaped_but_not_highlighted():
    code = "x = 1\n" * 20_000
    out = render_markdown(f"```python\n{code}```")
    assert "<span" not in out
    assert out.count("x = 1") == 20_000


def test_tables_align_with_classes_not_inline_styles():
    out = render_markdown("| a | b | c |\n|:-|:-:|-:|\n| 1 | 2 | 3 |")
    assert '<th class="align-left">a</th>' in out
    assert '<td class="align-center">2</td>' in out
    assert '<td class="align-right">3</td>' in out
    assert "style" not in out


def test_lists_emphasis_strikethrough_headings_quotes():
    out = render_markdown("# T\n\n- *a*\n- **b**\n\n3. c\n4. d\n\n~~gone~~\n\n> quoted")
    for fragment in ("<h1>T</h1>", "<em>a</em>", "<strong>b</strong>", '<ol start="3">', "<s>gone</s>"):
        assert fragment in out
    assert "<blockquote>" in out


def test_korean_text_survives_unchanged():
    text = "안녕하세요! **굵게** 그리고 `코드`"
    assert render_markdown(text) == "<p>안녕하세요! <strong>굵게</strong> 그리고 <code>코드</code></p>\n"


def test_plain_keeps_line_breaks_and_paragraphs_and_escapes():
    assert render_plain("a <b>\nb\n\n\nc & d") == "<p>a &lt;b&gt;<br>\nb</p>\n<p>c &amp; d</p>"


def test_render_message_uses_markdown_only_for_the_assistant():
    assert render_message("assistant", "**x**") == "<p><strong>x</strong></p>\n"
    assert render_message("user", "**x**") == "<p>**x**</p>"


def test_highlight_css_has_both_themes_and_no_backgrounds_for_the_block():
    css = highlight_css()
    assert ':root:not([data-theme="dark"]) .codeblock .k {' in css
    assert '[data-theme="dark"] .codeblock .k {' in css
    assert "<" not in css


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>\"'`=/()[]!:*#-|\n sjavcriptonelgxh&;")), max_size=80))
def test_random_markup_never_yields_active_html(text):
    assert active_html(render_markdown(text)) == []


def test_the_render_cache_is_bounded_for_long_replies():
    from daehwa import rendering

    rendering._render_cached.cache_clear()
    long_reply = "**x** " * 5_000  # 30,000 characters
    assert "<strong>x</strong>" in rendering.render_markdown(long_reply)
    assert rendering._render_cached.cache_info().currsize == 0  # long replies are rendered, not kept
    rendering.render_markdown("short **reply**")
    assert rendering._render_cached.cache_info().currsize == 1
    assert rendering._render_cached.cache_info().maxsize == 1024
