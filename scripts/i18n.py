#!/usr/bin/env python3
"""cnnlab's message catalogs in one command: extract, update, compile, check (Babel's own tools).

    python scripts/i18n.py              # extract -> cnnlab.pot, update every <lang>.po, compile every .mo
    python scripts/i18n.py --check      # fail (exit 1) if the .pot, a .po or a .mo is stale or incomplete
    python scripts/i18n.py --init fr    # start a new language: locale/fr/LC_MESSAGES/cnnlab.po from the .pot

Messages are extracted from ``src/cnnlab/**.py`` (``_``, ``N_``, ``ngettext``, ``pgettext``), from
the draw page's JavaScript (``src/cnnlab/web/*.js``: ``t("...")``) and from its HTML
(``src/cnnlab/web/*.html``: the text of every element marked ``data-i18n``). After an update, fill the
new ``msgstr`` entries of each ``.po`` (an entry marked ``#, fuzzy`` is a guess Babel made from a
similar message: check it and delete the flag), then run the script again to compile. The ``.mo``
files are committed and shipped in the wheel; ``tests/test_i18n.py`` fails while any of this is stale.
docs/i18n.md has the whole procedure.
"""
from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterable
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's cnnlab, whatever is installed

from cnnlab.core.i18n_page import JS_KEYWORDS, JS_OPTIONS, extract_html  # noqa: E402 (the page's extractor lives with its renderer)

PACKAGE = ROOT / "src" / "cnnlab"
LOCALE = PACKAGE / "locale"
DOMAIN = "cnnlab"
POT = LOCALE / f"{DOMAIN}.pot"
COMMENT_TAGS = ["TRANSLATORS:"]
PROJECT = "cnnlab"


def _extract(method_map: list[tuple[str, object]], keywords: dict) -> Iterable[tuple]:
    options = {pattern: JS_OPTIONS for pattern, method in method_map if method == "javascript"}
    return extract_from_dir(str(PACKAGE), method_map=method_map, options_map=options, keywords=keywords,
                            comment_tags=COMMENT_TAGS, strip_comment_tags=True)


def extract() -> Catalog:
    """Every marked message of the package, its JavaScript and its HTML: the template (.pot)."""
    template = Catalog(project=PROJECT, domain=DOMAIN, charset="utf-8", fuzzy=False)
    sources = [
        ([("**.py", "python")], DEFAULT_KEYWORDS),
        ([("web/**.js", "javascript")], JS_KEYWORDS),
        ([("web/**.html", extract_html)], {"_": None}),
    ]
    for method_map, keywords in sources:
        for filename, lineno, message, comments, context in _extract(method_map, keywords):
            path = f"src/cnnlab/{filename}"
            template.add(message, None, [(path, None)], auto_comments=comments, context=context)
    for message in template:  # str.format placeholders: tell translators (and msgfmt-like tools) so
        if message.id and any("{" in m for m in ([message.id] if isinstance(message.id, str) else message.id)):
            message.flags.add("python-brace-format")
    return template


def _keys(catalog: Catalog) -> set[tuple]:
    return {(m.id if isinstance(m.id, str) else tuple(m.id), m.context) for m in catalog if m.id}


def languages() -> list[str]:
    return sorted(p.parent.parent.name for p in LOCALE.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def po_path(lang: str) -> Path:
    return LOCALE / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalog(path: Path, lang: str | None = None) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale=lang, domain=DOMAIN)


def po_bytes(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    # No line numbers (only files): the catalogs do not change each time code moves a line.
    write_po(buf, catalog, width=100, include_lineno=False, ignore_obsolete=True, sort_output=True)
    return buf.getvalue()


def mo_bytes(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def _strip_dates(data: bytes) -> bytes:
    return b"\n".join(line for line in data.splitlines()
                      if not line.startswith((b'"POT-Creation-Date', b'"PO-Revision-Date')))


def update_template(template: Catalog) -> bool:
    """Write cnnlab.pot when its messages changed (a new date alone is no change)."""
    if POT.is_file():
        old = read_catalog(POT)
        template.creation_date = old.creation_date
        if _strip_dates(po_bytes(old)) == _strip_dates(po_bytes(template)):
            return False
    return _write_if_changed(POT, po_bytes(template))


def update_language(lang: str, template: Catalog) -> tuple[bool, Catalog]:
    """Merge the template into ``lang``'s .po: new messages empty (or fuzzy guesses), gone ones dropped."""
    path = po_path(lang)
    catalog = read_catalog(path, lang)
    catalog.update(template, update_header_comment=False)
    catalog.obsolete.clear()
    return _write_if_changed(path, po_bytes(catalog)), catalog


def problems(template: Catalog) -> list[str]:
    """What is stale or incomplete, one line each (empty: the catalogs are ready to ship)."""
    out: list[str] = []
    if not POT.is_file():
        return [f"{POT.relative_to(ROOT)} is missing: run python scripts/i18n.py"]
    if _keys(read_catalog(POT)) != _keys(template):
        out.append(f"{POT.relative_to(ROOT)} is stale (the code's messages changed): run python scripts/i18n.py")
    for lang in languages():
        catalog = read_catalog(po_path(lang), lang)
        rel = po_path(lang).relative_to(ROOT)
        have = {(m.id if isinstance(m.id, str) else tuple(m.id), m.context): m for m in catalog if m.id}
        for key in sorted(_keys(template) - set(have), key=str):
            out.append(f"{rel}: no entry for {key[0]!r}: run python scripts/i18n.py and translate it")
        for key, m in sorted(have.items(), key=lambda kv: str(kv[0])):
            if key not in _keys(template):
                out.append(f"{rel}: {key[0]!r} is no longer in the code: run python scripts/i18n.py")
            elif m.fuzzy:
                out.append(f"{rel}: {key[0]!r} is fuzzy: check its translation and remove the flag")
            elif not m.string or (not isinstance(m.string, str) and not all(m.string)):
                out.append(f"{rel}: {key[0]!r} has no translation")
        mo = po_path(lang).with_suffix(".mo")
        if not mo.is_file() or mo.read_bytes() != mo_bytes(catalog):
            out.append(f"{mo.relative_to(ROOT)} does not match its .po: run python scripts/i18n.py")
    return out


def init(lang: str, template: Catalog) -> Path:
    path = po_path(lang)
    if path.exists():
        raise SystemExit(f"{path.relative_to(ROOT)} exists already; run python scripts/i18n.py to update it")
    catalog = Catalog(locale=lang, project=PROJECT, domain=DOMAIN, charset="utf-8", fuzzy=False)
    catalog.update(template)
    _write_if_changed(path, po_bytes(catalog))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is stale or untranslated")
    ap.add_argument("--init", metavar="LANG", help="start the catalog of a new language (e.g. fr)")
    args = ap.parse_args(argv)
    template = extract()
    if args.check:
        found = problems(template)
        for line in found:
            print(line)
        print(f"{len(template)} messages; " + ("catalogs stale or incomplete" if found else "catalogs up to date"))
        return 1 if found else 0
    if args.init:
        update_template(template)
        print(f"wrote {init(args.init, template).relative_to(ROOT)}: translate it, add {args.init!r} to "
              "LANGUAGES in src/cnnlab/core/i18n.py, then run python scripts/i18n.py")
        return 0
    if update_template(template):
        print(f"wrote {POT.relative_to(ROOT)} ({len(template)} messages)")
    for lang in languages():
        changed, catalog = update_language(lang, template)
        todo = sum(1 for m in catalog if m.id and (m.fuzzy or not m.string))
        if changed:
            print(f"updated {po_path(lang).relative_to(ROOT)}")
        if todo:
            print(f"{lang}: {todo} message(s) to translate (empty or fuzzy)")
        mo = po_path(lang).with_suffix(".mo")
        if _write_if_changed(mo, mo_bytes(catalog)):
            print(f"compiled {mo.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
