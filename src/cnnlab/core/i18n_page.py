"""The draw-a-digit page in the learner's language: its HTML's marked text, and the catalog its JavaScript reads.

The page (``cnnlab/web/index.html``) marks what a reader sees with ``data-i18n`` (an element's text)
and ``data-i18n-attr="alt aria-label"`` (those attributes); :func:`translate_page` writes them in the
language asked for, sets ``<html lang>``, and puts the page's JavaScript messages in a JSON block
(``<script id="cnnlab-catalog" type="application/json">``) that the page's ``t("English text")`` reads.
The JavaScript messages are found with Babel's own JavaScript extractor, the same one
``scripts/i18n.py`` runs, so a new ``t("...")`` is extracted, translated and served with no list to keep.
The language of a request: ``?lang=``, else the server's own setting, else the browser's ``Accept-Language``.
"""
from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

from cnnlab.core.i18n import LANGUAGES, _, normalize, use_language

JS_KEYWORDS = {"t": None}  # t("English text") or t("English {name}", {name: ...})
JS_OPTIONS = {"parse_template_string": True}  # t() inside a `template ${t("literal")}` counts too
CATALOG_ID = "cnnlab-catalog"


def _clean(text: str) -> str:
    return " ".join(text.split())


class _Marked(HTMLParser):
    """Text of ``data-i18n`` elements and values of ``data-i18n-attr`` attributes, with line numbers."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str]] = []
        self._open: list[tuple[str, int, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        line = self.getpos()[0]
        for name in (a.get("data-i18n-attr") or "").split():
            if a.get(name):
                self.found.append((line, _clean(a[name] or "")))
        if "data-i18n" in a:
            self._open.append((tag, line, []))

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            _tag, line, parts = self._open.pop()
            self.found.append((line, _clean("".join(parts))))


def marked_texts(page: str) -> list[tuple[int, str]]:
    """(line, text) of everything the page marks for translation, whitespace runs as one space."""
    parser = _Marked()
    parser.feed(page)
    return [(line, text) for line, text in parser.found if text]


def extract_html(fileobj: io.BufferedIOBase, keywords: object, comment_tags: object,
                 options: dict) -> Iterator[tuple[int, str, str, list[str]]]:
    """A Babel extraction method for the page's HTML (``scripts/i18n.py`` uses it)."""
    for line, text in marked_texts(fileobj.read().decode(options.get("encoding", "utf-8"))):
        yield line, "_", text, []


def script_messages(sources: Iterable[bytes]) -> list[str]:
    """The ``t("...")`` messages of the page's JavaScript files, by Babel's JavaScript extractor."""
    from babel.messages.extract import extract

    found: list[str] = []
    for source in sources:
        for _line, message, _comments, _context in extract("javascript", io.BytesIO(source), keywords=JS_KEYWORDS,
                                                              options=JS_OPTIONS):
            if isinstance(message, str) and message not in found:
                found.append(message)
    return found


_ELEMENT = re.compile(r"(<(?P<tag>[a-zA-Z0-9]+)\b[^>]*\sdata-i18n(?=[\s>])[^>]*>)(?P<text>.*?)(</(?P=tag)>)", re.S)
_ATTRS = re.compile(r"<[a-zA-Z0-9]+\b[^>]*\bdata-i18n-attr=\"(?P<names>[^\"]*)\"[^>]*>", re.S)


def translate_page(page: str, scripts: Iterable[bytes], lang: str) -> str:
    """The page in ``lang``: marked text and attributes translated, ``<html lang>`` set, and the
    JavaScript's messages as a JSON catalog (English: an empty one; ``t`` then returns its text)."""
    with use_language(lang):
        def element(m: re.Match) -> str:
            text = _clean(html.unescape(m.group("text")))
            if _(text) == text:  # English (or not translated): the page's own markup, byte for byte
                return m.group(0)
            return m.group(1) + html.escape(_(text), quote=False) + m.group(4)

        def attribute_value(a: re.Match) -> str:
            text = _clean(html.unescape(a.group(2)))
            return a.group(0) if _(text) == text else a.group(1) + html.escape(_(text)) + a.group(3)

        def attributes(m: re.Match) -> str:
            tag = m.group(0)
            for name in m.group("names").split():
                tag = re.sub(rf'(\s{re.escape(name)}=")([^"]*)(")', attribute_value, tag)
            return tag

        page = _ATTRS.sub(attributes, _ELEMENT.sub(element, page))
        catalog = {m: _(m) for m in script_messages(scripts) if _(m) != m}
    page = re.sub(r'<html lang="[^"]*"', f'<html lang="{lang}"', page, count=1)
    # "</" cannot end the JSON block early: json.dumps leaves "<" alone, so escape it.
    block = (f'<script id="{CATALOG_ID}" type="application/json">'
             + json.dumps(catalog, ensure_ascii=False, sort_keys=True).replace("<", "\\u003c") + "</script>")
    return page.replace("</head>", f"  {block}\n</head>", 1)


def negotiate(asked: str | None, accept_language: str | None, server: str | None = None,
              fallback: str = "en") -> str:
    """The page's language: ``asked`` (``?lang=``) if cnnlab speaks it; else the server's own setting
    (``cnnlab --lang es serve``, ``CNNLAB_LANG``); else the browser's first ``Accept-Language`` choice
    that cnnlab speaks (by weight); else ``fallback`` (the server's locale, or English)."""
    for choice in (asked, server):
        if choice and normalize(choice):
            return normalize(choice)  # type: ignore[return-value]
    choices: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _sep, params = part.strip().partition(";")
        weight = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                weight = float(match.group(1))
            except ValueError:
                weight = 0.0
        code = normalize(tag) if tag and tag != "*" else None
        if code and weight > 0:
            choices.append((-weight, i, code))
    return min(choices)[2] if choices else (fallback if fallback in LANGUAGES else "en")
