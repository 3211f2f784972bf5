"""What /help says and how Telegram's command menu describes each command, in the user's language.

The English texts are the msgids (extracted into core/words/locale); command words stay as they are in every language.
"""
from __future__ import annotations

from core.words import messages
from core.words.i18n import N_, translator

TELEGRAM_PREFIX = "/"
SLACK_PREFIX = "/earshot "
DISCORD_PREFIX = "/earshot "

TELEGRAM_HELP = N_("""I listen to voice notes and audio files and answer about them, using Qwen's audio models.

• Send a voice note and I reply to it, as in a conversation.
• Add a caption to ask about it: "what time did she say?"
• Or send a link to an audio or video file.
• Then write to follow up on what was said.
• Commands act on the audio you reply to, or on the latest one here:
/transcribe – word for word
/summarize – the gist
/sentiment – the speaker's mood and tone
/events – sounds, music and speech, with times
/ask what did he promise? – a question about it
/translate English – what's said, in another language
/voice on – answers come back spoken (models that speak); /voice off – text again
/reset – forget this conversation
/usage – tokens used today, and what's left

In groups I answer when you use a command, mention me, or reply to me.""")

TELEGRAM_START = N_("Hi, I'm earshot. Send me a voice note or an audio file and I'll answer about it: a transcript, "
                    "a summary, the mood, or your question. /help lists everything I do.")

SLACK_HELP = N_("""*earshot* listens to audio and answers about it.
• *In a DM:* send a voice clip or an audio file (mp3, m4a, wav, ogg, flac…) or a link to one, maybe with \
a question; type to follow up.
• *In a channel:* @mention me with an audio file, or in a thread that has one.
• `/earshot transcribe` · `summarize` · `sentiment` · `events` — about the latest audio here
• `/earshot ask <question>` · `/earshot translate <language>`
• `/earshot voice on [VOICE]` · `voice off` — answers spoken back as audio in the thread (models that speak)
• `/earshot reset` forgets this conversation · `/earshot usage` shows today's tokens""")

DISCORD_HELP = N_("""**earshot** listens to voice messages and audio files and answers about them, using Qwen's \
audio models.
• **In a DM:** send a voice message or an audio or video file, maybe with a question; then write to follow up.
• **In a server:** mention me in a message with audio, or in a reply to one; or right-click a message → Apps → \
"Transcribe with earshot" / "Summarize with earshot".
• `/earshot transcribe` · `summarize` · `ask` · `translate` — with an attached file, or on the latest audio here
• `/earshot voice on` · `voice off` — answers spoken back as voice messages (models that speak)
• `/earshot lang de` — the language I speak here · `/earshot usage` — today's tokens
• `/earshot auto on` — transcribe every voice message in this channel (people who can manage the server)""")


WHATSAPP_HELP = N_("""I listen to voice notes and audio files and answer about them, using Qwen's audio models.

• Send a voice note and I reply to it, as in a conversation.
• Add a caption to an audio or video file to ask about it.
• Then write to follow up on what was said.
• These words act on the latest audio here (a / in front is fine too):
transcribe – word for word
summarize – the gist
sentiment – the speaker's mood and tone
events – sounds, music and speech, with times
ask what did he promise? – a question about it
translate English – what's said, in another language
voice on – answers come back as voice notes too (models that speak); voice off – text again
lang de – the language I speak here
reset – forget this conversation
usage – tokens used today, and what's left""")

# /lang, for the help texts once chats can choose their language
TELEGRAM_HELP_LANG = N_("/lang de – the language I speak here (en, de, es, fr, it, ja, zh-Hans, zh-Hant)")
SLACK_HELP_LANG = N_("`/earshot lang de` sets the language I speak here (en, de, es, fr, it, ja, zh-Hans, zh-Hant)")
# /spoken: the language spoken in the audio, for transcripts by the recognizer
TELEGRAM_HELP_SPOKEN = N_("/spoken de – the language spoken in your audio, for transcripts (/spoken auto: detect it)")
WHATSAPP_HELP_SPOKEN = N_("spoken de – the language spoken in your audio, for transcripts (spoken auto: detect it)")
SLACK_HELP_SPOKEN = N_("`/earshot spoken de` sets the language spoken in your audio, for transcripts "
                       "(`/earshot spoken auto`: detect it)")

# Telegram's command menu (set_my_commands), in menu order
TELEGRAM_COMMANDS: list[tuple[str, str]] = [
    ("transcribe", N_("Word-for-word transcript of the audio")),
    ("summarize", N_("Summary of the audio")),
    ("sentiment", N_("The speaker's mood and tone")),
    ("events", N_("Sounds, music and speech, with times")),
    ("ask", N_("Ask a question about the audio: /ask <question>")),
    ("translate", N_("Translate what's said: /translate <language>")),
    ("voice", N_("Spoken answers: /voice on [VOICE] or /voice off")),
    ("reset", N_("Forget this conversation")),
    ("usage", N_("Tokens used today, and what's left")),
    ("digest", N_("Sum up this group's voice notes: /digest [2h|24h|7d|on|off|daily 09:00]")),
    ("forget", N_("Delete everything stored for this chat (admins)")),
    ("help", N_("What I do and how to use me")),
]
TELEGRAM_LANG_COMMAND = ("lang", N_("The language I speak here: /lang <code>"))
TELEGRAM_MODEL_COMMAND = ("model", N_("The model that answers here: /model <name>"))
TELEGRAM_SPOKEN_COMMAND = ("spoken", N_("The language spoken in your audio: /spoken <code> or auto"))

# set_my_commands takes two-letter codes only, so Chinese menus are in Simplified characters
TELEGRAM_MENU_LANGUAGES = {"de": "de", "es": "es", "fr": "fr", "it": "it", "ja": "ja", "zh": "zh-Hans"}


def digest_help(prefix: str, retention_days: float, lang: str | None) -> str:
    """What /help says about digests: what is stored, and for how long."""
    days = messages.count(messages.DAYS, retention_days, lang)
    return messages.text(messages.DIGEST_HELP, lang, prefix=prefix, days=days)


def telegram_help(lang: str | None, retention_days: float, *, with_lang: bool = False, group: bool = True) -> str:
    """/help; the paragraph on digests only in a group, where they work."""
    t = translator(lang)
    body = t.text(TELEGRAM_HELP)
    if with_lang:  # the /lang line ends the list of commands, before the last paragraph
        commands, groups = body.rsplit("\n\n", 1)
        body = commands + "\n" + t.text(TELEGRAM_HELP_LANG) + "\n" + t.text(TELEGRAM_HELP_SPOKEN)
        body += "\n\n" + groups
    return body + "\n\n" + digest_help(TELEGRAM_PREFIX, retention_days, lang) if group else body


def slack_help(lang: str | None, retention_days: float, *, with_lang: bool = False, group: bool = True) -> str:
    """`/earshot help`; the line on digests only in a channel, where they work."""
    t = translator(lang)
    lines = [t.text(SLACK_HELP)]
    if with_lang:
        lines += [t.text(SLACK_HELP_LANG), t.text(SLACK_HELP_SPOKEN)]
    if group:
        lines.append(digest_help(SLACK_PREFIX, retention_days, lang))
    return "\n• ".join(lines)


def telegram_start(lang: str | None) -> str:
    """/start: a short greeting, not the whole of /help."""
    return translator(lang).text(TELEGRAM_START)


def whatsapp_help(lang: str | None) -> str:
    """`help`: the words WhatsApp takes, `spoken` last."""
    t = translator(lang)
    return t.text(WHATSAPP_HELP) + "\n" + t.text(WHATSAPP_HELP_SPOKEN)


def telegram_commands(lang: str | None, *, with_lang: bool = False) -> list[tuple[str, str]]:
    """(command, description) pairs for Telegram's menu in one language."""
    t = translator(lang)
    extra = [TELEGRAM_LANG_COMMAND, TELEGRAM_MODEL_COMMAND, TELEGRAM_SPOKEN_COMMAND] if with_lang else []
    commands = TELEGRAM_COMMANDS[:-1] + extra + TELEGRAM_COMMANDS[-1:]
    return [(name, t.text(description)) for name, description in commands]


def discord_help(lang: str | None, retention_days: float) -> str:
    return translator(lang).text(DISCORD_HELP) + "\n• " + digest_help(DISCORD_PREFIX, retention_days, lang)
