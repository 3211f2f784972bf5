"""The bot's own words in every language it speaks: complete catalogs, intact placeholders and commands,
the language a client's code means, and the language named in prompts."""
from __future__ import annotations

import fnmatch
import gettext
import io
import re
import string
import tomllib
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from core.model import prompts
from core.values import Task
from core.words import help_texts, messages
from core.words.i18n import DEFAULT, LANGUAGES, Language, Translator, best_language, catalog_file, supported_language

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = [lang for lang in LANGUAGES.values() if lang.code != DEFAULT]
KEYWORDS = {"N_": None, "Nn_": (1, 2)}
COMMAND = re.compile(r"/[a-z][a-z_]*")     # /transcribe, /earshot, /setprivacy: never translated


def _catalog(lang: Language) -> Catalog:
    with catalog_file(lang.catalog).open("rb") as source:
        return read_po(source, locale=lang.catalog)


def _marked() -> set[str]:
    """Every msgid marked in core/ (what `bin/translations extract` finds), singular of plurals."""
    found = extract_from_dir(str(ROOT / "core"), method_map=[("**.py", "python")], keywords=KEYWORDS)
    return {m if isinstance(m, str) else m[0] for _, _, m, _, _ in found}


def _placeholders(text: str) -> set[tuple[str, str, str | None]]:
    return {(name, spec or "", conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None}


def _pairs(catalog: Catalog) -> list[tuple[str, str]]:
    """(source, translation) for every form: a plural's forms are checked against its plural msgid."""
    pairs = []
    for m in catalog:
        if not m.id:
            continue
        if isinstance(m.id, str):
            pairs.append((m.id, m.string))
        else:
            pairs += [(m.id[1], form) for form in m.string]
    return pairs


@pytest.fixture(scope="module")
def marked() -> set[str]:
    return _marked()


@pytest.mark.parametrize("lang", TRANSLATED, ids=lambda lang: lang.code)
def test_every_catalog_translates_every_marked_message(lang: Language, marked: set[str]) -> None:
    catalog = _catalog(lang)
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
    assert ids == marked, "run bin/translations extract, then translate what is new"
    untranslated = [m.id for m in catalog if m.id and (m.fuzzy or not all(m.string if isinstance(m.string, tuple)
                                                                         else [m.string]))]
    assert untranslated == []


@pytest.mark.parametrize("lang", TRANSLATED, ids=lambda lang: lang.code)
def test_translations_keep_placeholders_and_command_words(lang: Language) -> None:
    for source, translated in _pairs(_catalog(lang)):
        assert _placeholders(translated) == _placeholders(source), (source, translated)
        assert set(COMMAND.findall(translated)) == set(COMMAND.findall(source)), (source, translated)


def test_the_catalog_directories_are_the_languages() -> None:
    on_disk = {p.name for p in (ROOT / "core" / "words" / "locale").iterdir() if p.is_dir()}
    assert on_disk == {lang.catalog for lang in TRANSLATED}


def test_the_catalogs_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["core.words"]
    for lang in TRANSLATED:
        relative = f"locale/{lang.catalog}/LC_MESSAGES/earshot.po"
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
        assert catalog_file(lang.catalog).is_file()


@pytest.mark.parametrize(("code", "expected"), [
    ("de", "de"), ("de-DE", "de"), ("de_AT", "de"), ("DE", "de"), ("ja-JP", "ja"), ("fr-CA", "fr"),
    ("es-419", "es"), ("it", "it"), ("en-GB", "en"),
    ("zh", "zh-Hans"), ("zh-hans", "zh-Hans"), ("zh-CN", "zh-Hans"), ("zh-SG", "zh-Hans"),
    ("zh-hant", "zh-Hant"), ("zh-TW", "zh-Hant"), ("zh-HK", "zh-Hant"), ("zh_Hant_HK", "zh-Hant"),
    ("yue", "zh-Hant"), ("yue-Hant-HK", "zh-Hant"), ("zh-Hans-HK", "zh-Hans"),
    # what people type after /lang
    ("German", "de"), ("deutsch", "de"), ("日本語", "ja"), ("中文", "zh-Hans"), ("Cantonese", "zh-Hant"),
    # anything else: English
    ("pt-br", "en"), ("ru", "en"), ("", "en"), (None, "en"), ("  ", "en"), ("x-klingon", "en"),
])
def test_best_language(code: str | None, expected: str) -> None:
    assert best_language(code) == expected


def test_unsupported_languages_are_told_apart_from_english() -> None:
    assert supported_language("pt-br") is None
    assert supported_language("en-US") == "en"


def test_a_german_user_gets_german_help_and_menu() -> None:
    text = help_texts.telegram_help("de", 7)
    assert text.startswith("Ich höre mir Sprachnachrichten")
    assert "/transcribe – Wort für Wort" in text and "7 Tage lang" in text
    assert "I listen" not in text and "/lang" not in text
    menu = dict(help_texts.telegram_commands("de-DE"))
    assert menu["summarize"] == "Zusammenfassung des Audios"
    assert list(menu) == [name for name, _ in help_texts.TELEGRAM_COMMANDS]


def test_help_can_name_lang() -> None:
    text = help_texts.telegram_help("ja", 1, with_lang=True)
    assert "/lang ja" in text.split("\n\n")[1] and "1 日間" in text
    assert [name for name, _ in help_texts.telegram_commands("ja", with_lang=True)][-4:] == ["lang", "model", "spoken",
                                                                                    "help"]
    slack = help_texts.slack_help("zh-TW", 30, with_lang=True)
    assert slack.startswith("*earshot* 收聽音訊") and "`/earshot lang zh-Hant`" in slack and "30 天" in slack


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_menu_descriptions_fit_telegram(lang: str) -> None:
    for name, description in help_texts.telegram_commands(lang, with_lang=True):
        assert 1 <= len(description) <= 256, (name, description)   # Bot API: BotCommand.description


def test_menu_languages_are_supported() -> None:
    assert set(help_texts.TELEGRAM_MENU_LANGUAGES.values()) <= set(LANGUAGES) - {DEFAULT}
    assert all(len(code) == 2 for code in help_texts.TELEGRAM_MENU_LANGUAGES)


@pytest.mark.parametrize(("forms", "n", "lang", "expected"), [
    (messages.DAYS, 1, "de", "1 Tag"), (messages.DAYS, 2, "de", "2 Tage"),
    (messages.DAYS, 1, "fr", "1 jour"), (messages.DAYS, 0, "fr", "0 jour"), (messages.DAYS, 2, "fr", "2 jours"),
    (messages.VOICE_NOTES, 1, "it", "1 vocale"), (messages.VOICE_NOTES, 5, "es", "5 notas de voz"),
    (messages.MINUTES, 1, "ja", "1 分"), (messages.MINUTES, 3, "zh-Hans", "3 分钟"),
    (messages.DAYS, 1, None, "1 day"), (messages.DAYS, 1.5, "en", "1.5 days"), (messages.DAYS, 7, "de-AT", "7 Tage"),
])
def test_counts_take_each_language_plural(forms, n, lang, expected) -> None:
    assert messages.count(forms, n, lang) == expected


def test_messages_are_said_in_the_language_asked_for() -> None:
    assert messages.text(messages.TOO_BIG, "fr", size_mb=31.4, limit_mb=20) == \
        "Ce fichier est trop lourd : 31.4 Mo, pour une limite de 20 Mo."
    assert messages.text(messages.TOO_BIG, None, size_mb=31.4, limit_mb=20) == \
        "That file is too big: 31.4 MB, and the limit is 20 MB."
    assert messages.text(messages.EMPTY_FILE, "zh-HK") == "這個檔案是空的。"
    assert messages.text(messages.EMPTY_FILE, "pt-BR") == messages.EMPTY_FILE
    # operator messages are not translated
    assert messages.text(messages.BAD_KEY_CLI, "de") == messages.BAD_KEY_CLI


def test_a_broken_translation_is_said_in_english() -> None:
    catalog = Catalog(locale="de")
    catalog.add(messages.TOO_BIG, "Zu groß: {groesse} MB")
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    t = Translator(LANGUAGES["de"], gettext.GNUTranslations(compiled))
    assert t.text(messages.TOO_BIG, size_mb=3.0, limit_mb=2) == "That file is too big: 3.0 MB, and the limit is 2 MB."
    assert t.text(messages.EMPTY_FILE) == messages.EMPTY_FILE          # missing entries: English


@pytest.mark.parametrize("task", [Task.SUMMARIZE, Task.SENTIMENT, Task.EVENTS, Task.ASK])
def test_answers_are_written_in_the_chat_language(task: Task) -> None:
    instruction = prompts.clip_instruction(task, "when?", voice_chat=False)
    assert instruction is not None
    assert prompts.in_language(instruction, task, "de") == instruction + "\nWrite in German."
    assert prompts.in_language(instruction, task, "zh-TW").endswith("\nWrite in Traditional Chinese.")
    assert prompts.in_language(instruction, task, None) == instruction


@pytest.mark.parametrize("task", [Task.TRANSCRIBE, Task.TRANSLATE, Task.CHAT])
def test_transcripts_and_translations_keep_their_language(task: Task) -> None:
    instruction = prompts.clip_instruction(task, "French", voice_chat=False)
    assert instruction is not None
    assert prompts.in_language(instruction, task, "ja") == instruction


def test_digests_follow_the_chat_language_instead_of_the_notes() -> None:
    for template in (prompts.DIGEST, prompts.DIGEST_PART, prompts.DIGEST_MERGE, prompts.DIGEST_COMBINE):
        told = prompts.in_language(template, None, "ja")
        assert "Write in Japanese, and name people as given." in told
        assert "most of the voice notes" not in told
