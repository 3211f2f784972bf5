"""The bot's own words in the user's language: gettext catalogs, and which language a client's code means.

Catalogs are `core/words/locale/<dir>/LC_MESSAGES/earshot.po`, shipped as package data. They are compiled in memory
with Babel the first time a language is used (a few milliseconds, once per process and language), so there is
no build step and no compiled file that can drift from its source; English, the source language, loads nothing.

    t = translator(best_language(update.effective_user.language_code))   # or a Slack user's locale, or /lang
    t.text(messages.TOO_BIG, size_mb=31.2, limit_mb=20)
    t.plural(messages.MINUTES, 3)
"""
from __future__ import annotations

import functools
import gettext
import io
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

DOMAIN = "earshot"
DEFAULT = "en"


def N_(message: str) -> str:
    """Marks a message for extraction (`pybabel extract -k N_`); it is translated where it is said."""
    return message


@dataclass(frozen=True, slots=True)
class Plural:
    """A message with a count, `{n}` in both forms: `Nn_("{n} minute", "{n} minutes")`."""

    singular: str
    plural: str


def Nn_(singular: str, plural: str) -> Plural:  # noqa: N802 - the extraction keyword, like N_
    """Marks a plural message for extraction (`pybabel extract -k Nn_:1,2`)."""
    return Plural(singular, plural)


@dataclass(frozen=True, slots=True)
class Language:
    code: str        # what /lang shows and stores
    english: str     # named in prompts ("Write in German."): models follow a name better than a code
    native: str      # how its speakers call it, for /lang replies

    @property
    def catalog(self) -> str:
        """The catalog's directory under core/words/locale (gettext spells scripts with "_")."""
        return self.code.replace("-", "_")


LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("en", "English", "English"),
    Language("zh-Hans", "Simplified Chinese", "简体中文"),
    Language("zh-Hant", "Traditional Chinese", "繁體中文"),
    Language("fr", "French", "Français"),
    Language("it", "Italian", "Italiano"),
    Language("es", "Spanish", "Español"),
    Language("de", "German", "Deutsch"),
    Language("ja", "Japanese", "日本語"),
)}

# Chinese written in Traditional characters: Taiwan, Hong Kong, Macau; and Cantonese speakers anywhere.
_TRADITIONAL_REGIONS = {"tw", "hk", "mo"}
_CHINESE = {"zh", "yue", "cmn", "lzh"}
# what people type after /lang besides a code: the names of the languages, in English and in their own
_NAMES = {
    **{lang.english.lower(): lang.code for lang in LANGUAGES.values()},
    **{lang.native.lower(): lang.code for lang in LANGUAGES.values()},
    "chinese": "zh-Hans", "mandarin": "zh-Hans", "中文": "zh-Hans", "汉语": "zh-Hans", "普通话": "zh-Hans",
    "简体": "zh-Hans", "繁體": "zh-Hant", "繁体中文": "zh-Hant", "cantonese": "zh-Hant", "廣東話": "zh-Hant",
    "广东话": "zh-Hant", "粵語": "zh-Hant", "粤语": "zh-Hant", "francais": "fr", "espanol": "es",
    "castellano": "es", "nihongo": "ja", "japonais": "ja",
}


def supported_language(code: str | None) -> str | None:
    """The supported language a Telegram `language_code` ("pt-br", "zh-hant", "yue"), a Slack `locale`
    ("de-DE", "zh-TW") or what a user typed after /lang ("ja", "German", "中文") means; None if none."""
    if not code or not code.strip():
        return None
    text = code.strip().lower()
    if text in _NAMES:
        return _NAMES[text]
    primary, *rest = text.replace("_", "-").split("-")
    subtags = set(rest)
    if primary in _CHINESE:
        if "hans" in subtags:
            return "zh-Hans"
        if "hant" in subtags or subtags & _TRADITIONAL_REGIONS or primary == "yue":
            return "zh-Hant"
        return "zh-Hans"
    return primary if primary in LANGUAGES else None


def best_language(code: str | None) -> str:
    """Like `supported_language`, with English for anything else (or nothing)."""
    return supported_language(code) or DEFAULT


class Localized:
    """A value inside a message that says itself in the message's language ("3 minutes", "12 min"), so an
    error can carry it unsaid and be rendered for each chat; formatted as is, it is English."""

    def said(self, lang: str | None) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.said(None)

    def __format__(self, spec: str) -> str:
        return format(self.said(None), spec)


@dataclass(frozen=True, slots=True)
class Phrase(Localized):
    """A marked message used as a value inside another one, translated with it."""

    message: str

    def said(self, lang: str | None) -> str:
        return translator(lang).gettext(self.message)


def _localize(fmt: dict[str, object], lang: str) -> dict[str, object]:
    return {k: v.said(lang) if isinstance(v, Localized) else v for k, v in fmt.items()}


class Translator:
    """One language's catalog. Missing entries, and a translation that can't be filled in, fall back to English."""

    def __init__(self, language: Language, translations: gettext.NullTranslations) -> None:
        self.language = language
        self._t = translations

    @property
    def lang(self) -> str:
        return self.language.code

    def gettext(self, message: str) -> str:
        return self._t.gettext(message)

    _ = gettext

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)

    def text(self, message: str, /, **fmt: object) -> str:
        """The message in this language, its {placeholders} filled in."""
        translated = self._t.gettext(message)
        return _fill(translated, message, _localize(fmt, self.lang)) if fmt else translated

    def plural(self, forms: Plural, n: float, /, **fmt: object) -> str:
        """The form of `forms` that fits the count n (a fraction takes the form of 2), with {n} filled in."""
        count = int(n) if n == int(n) else 2
        translated = self._t.ngettext(forms.singular, forms.plural, count)
        english = forms.singular if count == 1 else forms.plural
        return _fill(translated, english, {"n": f"{n:g}", **_localize(fmt, self.lang)})


def _fill(translated: str, english: str, fmt: dict[str, object]) -> str:
    try:
        return translated.format(**fmt)
    except (KeyError, IndexError, ValueError):
        # a broken translation must not cost the user the answer (tests check every catalog's placeholders)
        log.warning("translation of %r can't be filled in; said in English", english)
        return english.format(**fmt)


def translator(lang: str | None) -> Translator:
    """The translator for a language code, a client's locale, or None (English)."""
    return _translator(best_language(lang))


@functools.cache
def _translator(code: str) -> Translator:
    language = LANGUAGES[code]
    if code == DEFAULT:
        return Translator(language, gettext.NullTranslations())
    return Translator(language, gettext.GNUTranslations(io.BytesIO(compile_catalog(language.catalog))))


def catalog_file(catalog: str) -> Traversable:
    """The .po source of one language, inside the installed package."""
    return resources.files("core.words") / "locale" / catalog / "LC_MESSAGES" / f"{DOMAIN}.po"


def compile_catalog(catalog: str) -> bytes:
    """The .po compiled to .mo bytes; untranslated and fuzzy entries are left out (they fall back to English)."""
    from babel.messages.mofile import write_mo  # Babel costs ~12 ms to import: only when a language needs it
    from babel.messages.pofile import read_po

    with catalog_file(catalog).open("rb") as source:
        parsed = read_po(source, locale=catalog, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, parsed, use_fuzzy=False)
    return compiled.getvalue()
