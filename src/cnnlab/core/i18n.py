"""The learner's language: gettext catalogs for words, Babel for numbers.

One setting, resolved in this order: an explicit ``lang`` (``use_language("es")``, a
``lang=`` argument, the CLI's ``--lang``), then ``CNNLAB_LANG``, then the locale
(``LC_ALL``, ``LC_MESSAGES``, ``LANG``, ``LANGUAGE``), then English.

The chosen language lives in a :class:`contextvars.ContextVar`, not in a module global:
``with use_language("es"):`` in one notebook call or one server request changes nothing
for other threads, and nothing after the block ends.

Mark a message with ``_("...")`` where it is shown; ``N_("...")`` marks a module-level
constant for extraction and :func:`_` translates it later. Catalogs live in
``cnnlab/locale/<lang>/LC_MESSAGES/cnnlab.po`` (sources) and ``.mo`` (compiled, shipped in
the wheel); ``python scripts/i18n.py`` extracts, updates and compiles them.
"""
from __future__ import annotations

import contextlib
import contextvars
import gettext as _gettext
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from cnnlab.core.errors import ConfigError

DOMAIN = "cnnlab"
LOCALE_DIR = Path(__file__).resolve().parents[1] / "locale"
LANGUAGES = ("en", "es")  # English is the source language: its messages are the msgids
DEFAULT = "en"
_ENV_LOCALE = ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("cnnlab_lang", default=None)


def normalize(lang: str) -> str | None:
    """``"es_ES.UTF-8"``, ``"es-MX"``, ``"ES"`` -> ``"es"``; None when cnnlab does not speak it."""
    code = lang.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    return code if code in LANGUAGES else None


def check_language(lang: str) -> str:
    """An explicitly asked-for language, normalised; an unknown one is a one-line error."""
    code = normalize(lang)
    if code is None:
        raise ConfigError(_("unknown language {lang!r}: choose one of {choices}").format(
            lang=lang, choices=", ".join(LANGUAGES)))
    return code


def from_environment(environ: dict[str, str] | None = None) -> str:
    """The language the environment asks for: ``CNNLAB_LANG``, else the locale, else English."""
    env = os.environ if environ is None else environ
    asked = env.get("CNNLAB_LANG", "").strip()
    if asked:
        return normalize(asked) or DEFAULT
    for var in _ENV_LOCALE:
        value = env.get(var, "").strip()
        if value and value not in ("C", "POSIX") and not value.startswith("C."):
            # LANGUAGE may list several ("es:en"); the first one cnnlab speaks wins.
            for part in value.split(":"):
                code = normalize(part)
                if code:
                    return code
            return DEFAULT
    return DEFAULT


def language() -> str:
    """The language in force here: the innermost :func:`use_language`, else the environment's."""
    return _current.get() or from_environment()


def chosen_language(environ: dict[str, str] | None = None) -> str | None:
    """The language someone asked for (a :func:`use_language` in force, else ``CNNLAB_LANG``), or None
    when only the locale speaks: a server lets a browser's ``Accept-Language`` beat a locale, not a choice."""
    env = os.environ if environ is None else environ
    asked = env.get("CNNLAB_LANG", "").strip()
    return _current.get() or (normalize(asked) if asked else None)


@contextlib.contextmanager
def use_language(lang: str | None) -> Iterator[str]:
    """Speak ``lang`` inside the block (None: keep what is in force); yields the language used."""
    if lang is None:
        yield language()
        return
    token = _current.set(check_language(lang))
    try:
        yield _current.get() or DEFAULT
    finally:
        _current.reset(token)


@lru_cache(maxsize=None)
def _translations(lang: str) -> _gettext.NullTranslations:
    if lang == DEFAULT:
        return _gettext.NullTranslations()
    return _gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang], fallback=True)


def _(message: str) -> str:
    """``message`` in the language in force (itself in English, or when untranslated)."""
    return _translations(language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form for ``n``, in the language in force."""
    return _translations(language()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    """``message`` translated in ``context`` (for a word that is translated two ways)."""
    return _translations(language()).pgettext(context, message)


def N_(message: str) -> str:
    """Mark ``message`` for extraction only; translate it later with ``_(constant)``."""
    return message


# Numbers: Babel (CLDR) knows each locale's symbols and percent pattern ("61.706", "0,0528", "98,70 %" in
# Spanish). The digits are always Python's own (correctly rounded from the float), so a number rounds
# the same way in every language, and English output stays byte for byte what it was.
_BABEL_LOCALE = {"es": "es_ES"}


@lru_cache(maxsize=None)
def _symbols(lang: str) -> tuple[str, str, str, str]:
    """(decimal mark, group separator, text before and after a percentage's number) for ``lang``."""
    from babel import Locale
    from babel.numbers import get_decimal_symbol, get_group_symbol

    locale = _BABEL_LOCALE[lang]
    pattern = Locale.parse(locale).percent_formats[None].pattern  # "#,##0\u00a0%" in Spanish
    number = pattern.strip("'").replace("'", "")
    head, _sep, tail = number.partition("#,##0")
    return get_decimal_symbol(locale), get_group_symbol(locale), head, tail


def _localize(text: str, lang: str) -> str:
    """Python's ``1,234.5`` written with ``lang``'s group separator and decimal mark."""
    decimal, group, _head, _tail = _symbols(lang)
    return text.replace(",", "\0").replace(".", decimal).replace("\0", group)


def localize_number(text: str) -> str:
    """A number Python wrote (``"3.75"``, ``"1,234.5"``) with the marks of the language in force."""
    lang = language()
    return text if lang == DEFAULT else _localize(text, lang)


def format_int(n: int) -> str:
    """An integer with thousands separators: ``61,706`` in English, ``61.706`` in Spanish."""
    lang = language()
    # Spanish (CLDR) omits the separator on 4-digit numbers ("1706"); cnnlab writes it from 1,000 on,
    # as a textbook does, so columns of numbers read alike.
    return f"{n:,}" if lang == DEFAULT else _localize(f"{n:,}", lang)


def format_float(x: float, decimals: int = 4) -> str:
    """A decimal number: ``0.0528`` in English, ``0,0528`` in Spanish (no thousands separators)."""
    lang = language()
    text = f"{x:.{decimals}f}"
    return text if lang == DEFAULT else _localize(text, lang)


def format_percent(fraction: float, decimals: int = 2) -> str:
    """A fraction as a percentage: ``98.70%`` in English, ``98,70 %`` in Spanish (a no-break space)."""
    lang = language()
    text = f"{100 * fraction:.{decimals}f}"
    if lang == DEFAULT:
        return f"{text}%"
    _decimal, _group, head, tail = _symbols(lang)
    return f"{head}{_localize(text, lang)}{tail}"
