"""Every sentence earshot says to a user about a problem, in one place.

What users read in chat is marked N_(...) for extraction into the catalogs (core/words/locale) and said in their
language with `text(messages.X, lang, ...)`; what only the operator reads (logs, stderr: *_OP, *_CLI,
credentials) stays English and unmarked.
"""
from core.words.i18n import N_, Nn_, Plural, translator

NOT_AUDIO = N_("I couldn't read that as audio. "
               "Send a voice note or an audio file (ogg, mp3, m4a, wav, flac, amr, webm…).")
EMPTY_FILE = N_("That file is empty.")
NO_AUDIO_TRACK = N_("That file has no audio track.")
SILENT = N_("I listened, but found no speech or sound in it.")
TOO_BIG = N_("That file is too big: {size_mb:.1f} MB, and the limit is {limit_mb:.0f} MB.")
TOO_BIG_TELEGRAM = N_("That file is over the 20 MB that Telegram lets bots download. "
                    "Send a shorter clip, or run earshot with a self-hosted Bot API server to lift the limit.")
TOO_LONG = N_("That audio is too long: I handle up to {limit} per file.")
DECODE_TIMEOUT = N_("That file took too long to decode; it may be damaged.")
NO_SAMPLES = N_("That file holds no sound: it may be cut short or damaged.")
FILE_NOT_FOUND = "No such file: {path}"

MODEL_BUSY = N_("The model is busy right now. Please try again in a minute.")
QUOTA_USED_UP = N_("The model's free quota is used up, so I can't answer for now. The operator has been told.")
MODEL_DOWN = N_("The model is unavailable right now. Please try again later.")
# durable jobs (core.flow.runner): said once while a request waits for the model, and when it waited too long
MODEL_WAITING = N_("The model is unavailable right now. I'll answer this when it is back.")
JOB_EXPIRED = N_("I couldn't get an answer from the model within {waited}, so I gave up on this one. "
               "Please send it again later.")
CONTENT_REJECTED = N_("The model refused that audio or question on content grounds.")
MODEL_REJECTED_INPUT = N_("The model couldn't process that audio: {detail}")
BAD_MODEL_RESPONSE = N_("The model sent an answer I couldn't read. Please try again.")
MISCONFIGURED = N_("Sorry, I'm misconfigured and can't answer right now. The operator has been told.")
BAD_KEY_CLI = "The DashScope API key was refused: check DASHSCOPE_API_KEY."
NO_KEY_CLI = "No DashScope API key: set DASHSCOPE_API_KEY."
INTERNAL = N_("Sorry, something went wrong on my side. Please try again.")

NO_AUDIO_YET = N_("There's no audio here yet. Send a voice note or an audio file, then ask again, "
                  "or reply to one with the command.")
NEED_QUESTION = N_("What should I ask about the audio? For example: ask what did she say about Friday?")
NEED_LANGUAGE = N_("Which language? For example: translate English")
NOTHING_TO_FOLLOW = N_("Send me a voice note or an audio file first.")
# a button under an answer whose audio is no longer kept (retention, /forget)
AUDIO_EXPIRED = N_("I no longer keep that audio (it expired, or this chat asked me to forget it). "
                   "Send it again to ask about it.")

# For the operator (logs, CLI stderr): what the model service said and what to fix.
BAD_KEY_OP = ("The DashScope API key was refused ({code}): check DASHSCOPE_API_KEY. Keys are per region: "
              "a Beijing key fails on dashscope-intl, and the reverse.")
MODEL_ACCESS_DENIED_OP = ("DashScope denied access to model {model} ({code}: {detail}): check that the account "
                          "behind DASHSCOPE_API_KEY has it enabled (Qwen-Audio is Beijing-only), "
                          "or set EARSHOT_MODEL to a model you can use.")
MODEL_NOT_FOUND_OP = ("DashScope has no model {model} ({code}): set EARSHOT_MODEL to qwen-audio-turbo, "
                      "qwen-audio-turbo-latest or qwen2-audio-instruct, and check DASHSCOPE_HTTP_BASE_URL.")
QUOTA_OP = ("DashScope says the quota is used up ({code}: {detail}). Qwen-Audio is free-trial only: "
            "paying does not unlock it; use another account's DASHSCOPE_API_KEY or switch EARSHOT_MODEL.")
BILLING_OP = "DashScope refused the call for billing reasons ({code}: {detail}): check the account's payment status."
THROTTLED_OP = "{service} rate-limited the call ({code}: {detail}) and the retry budget ran out."
MODEL_DOWN_OP = "{service} failed: {detail}"
BAD_RESPONSE_OP = ("DashScope answered HTTP {status} with a body that is not DashScope JSON ({content_type}: "
                   "{snippet!r}): check DASHSCOPE_HTTP_BASE_URL and any proxy in between.")
AUDIO_ITEM_TOO_BIG = N_("That audio piece is too big to send to the model: {size_mb:.1f} MB encoded, "
                        "over the {limit_mb:.0f} MB limit.")

# spoken answers
CANNOT_SPEAK = N_("The model {model} can't speak, so answers stay in text.{models}")
SPEAKING_MODELS = N_(" Models that speak: qwen3-omni-flash, qwen-omni-turbo.")
UNKNOWN_VOICE = N_("{model} has no voice {voice!r}. Voices: {voices}.")
VOICE_ON = N_("Answers here now come back spoken, in the voice {voice}. /voice off returns to text.")
VOICE_OFF = N_("Answers here are text again.")
NO_SPEECH = N_("{model} answered in text only this time; no spoken answer was written.")
VOICE_USAGE = N_("Use: voice on [VOICE] or voice off.")
BAD_KEY_COMPAT_OP = ("{service} refused the API key ({code}): check {variable} and its base URL. DashScope keys are "
                     "per region: a Beijing key fails on dashscope-intl (DASHSCOPE_REGION=singapore), and the reverse.")
FREE_TIER_ONLY_OP = ("DashScope says the free quota of {model} is used up ({code}: {detail}) and the account takes "
                     "free quota only: turn off \"use free tier only\" for the model in Model Studio to pay as you go.")
MODEL_NOT_FOUND_COMPAT_OP = ("{service} has no model {model} ({code}): check EARSHOT_MODEL against the models "
                             "it serves.")
BAD_RESPONSE_COMPAT_OP = ("{service} answered with a body that is not an OpenAI-compatible answer ({detail}): "
                          "check {variable} and any proxy in between.")

SLACK_FILE_UNAVAILABLE = N_("I couldn't fetch that file from Slack. Please share it again.")
SLACK_FILE_EXTERNAL = N_("I can't read that file: it is stored outside Slack (a linked or external file). "
                       "Upload the audio to Slack itself and ask again.")
SLACK_NO_CREDENTIALS = ("No Slack credentials: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
                        "(and SLACK_APP_TOKEN for Socket Mode).")
SLACK_BAD_TOKEN = ("Slack refused SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token (xoxb-…) from the "
                   "app's OAuth & Permissions page.")

DB_UNUSABLE = ("Can't use the database at {path}: {reason}. Set EARSHOT_DB to a writable SQLite file, "
               "or to a new file in a writable directory.")
TELEGRAM_UNREACHABLE = ("Can't reach the Telegram Bot API at {url} ({reason}): check the network, a proxy, "
                        "or TELEGRAM_API_BASE_URL.")
NO_TELEGRAM_TOKEN = "No Telegram bot token: set TELEGRAM_BOT_TOKEN (ask @BotFather for one)."
BAD_TELEGRAM_TOKEN = "Telegram refused the bot token: check TELEGRAM_BOT_TOKEN (from @BotFather)."
WHATSAPP_NO_CREDENTIALS = ("No WhatsApp credentials: set {missing} (Meta's app dashboard: WhatsApp -> API Setup, "
                           "and App settings -> Basic for the app secret).")
WHATSAPP_BAD_TOKEN = ("WhatsApp's Graph API refused WHATSAPP_ACCESS_TOKEN ({detail}): create a permanent token for a "
                      "system user with whatsapp_business_messaging (Business settings -> System users).")
WHATSAPP_NO_PERMISSION = ("WhatsApp's Graph API says the token lacks a permission ({detail}): give the system user "
                          "whatsapp_business_messaging and whatsapp_business_management for this number.")
# a message earshot can't listen to (an image, a sticker, a location…)
WHATSAPP_NOT_AUDIO = N_("I only listen: send me a voice note or an audio or video file, or type help.")
WHATSAPP_MEDIA_UNAVAILABLE = N_("I couldn't fetch that file from WhatsApp. Please send it again.")
# above the buttons under an answer about audio
WHATSAPP_MORE = N_("Ask this audio something else:")
# the language list Translate opens
WHATSAPP_TRANSLATE_INTO = N_("Translate it into which language?")
WHATSAPP_LANGUAGES = N_("Languages")
SLACK_BAD_APP_TOKEN = ("Slack refused SLACK_APP_TOKEN ({error}): create an app-level token with the connections:write "
                       "scope (Basic Information -> App-Level Tokens) and enable Socket Mode.")

# Who may use earshot, and how much. Each is said once, then earshot stays quiet for a while.
NOT_ALLOWED = N_("Sorry, I only answer people my owner has let in. If you know them, "
               "ask to be added: your {platform} id is {user_id}.")
NOT_ALLOWED_HERE = N_("Sorry, I'm not open to this chat. Ask my owner to add it.")
USER_BUDGET_USED = N_("You've used your {limit:,} tokens for today. "
                    "They come back at midnight UTC, in {wait}.")
CHAT_BUDGET_USED = N_("This chat has used its {limit:,} tokens for today. "
                    "They come back at midnight UTC, in {wait}.")
GLOBAL_BUDGET_USED = N_("I've used all {limit:,} of today's tokens, to keep the model's free quota from running out. "
                      "I'll answer again after midnight UTC, in {wait}.")
# a cost that doesn't fit today's budget: one whole sentence per budget (a "whose" piece can't be fitted into
# Japanese or Chinese word order)
TOO_COSTLY_USER = N_("That recording would take about {need:,} tokens to hear, and you have {left:,} left today. "
                     "Send a shorter clip, or try again after midnight UTC, in {wait}.")
TOO_COSTLY_CHAT = N_("That recording would take about {need:,} tokens to hear, and this chat has {left:,} left "
                     "today. Send a shorter clip, or try again after midnight UTC, in {wait}.")
TOO_COSTLY_GLOBAL = N_("That recording would take about {need:,} tokens to hear, and I have {left:,} left today. "
                       "Send a shorter clip, or try again after midnight UTC, in {wait}.")
# a cost over a whole day's budget: waiting won't help; {setting} is the variable the operator raises
NEVER_FITS_USER = N_("That would take about {need:,} tokens, more than the {limit:,} one person may use in a whole "
                     "day here, so waiting won't help. Ask for something shorter, or ask the bot's operator to "
                     "raise {setting}.")
NEVER_FITS_CHAT = N_("That would take about {need:,} tokens, more than the {limit:,} this chat may use in a whole "
                     "day, so waiting won't help. Ask for something shorter, or ask the bot's operator to raise "
                     "{setting}.")
NEVER_FITS_GLOBAL = N_("That would take about {need:,} tokens, more than the {limit:,} I may use in a whole day, so "
                       "waiting won't help. Ask for something shorter, or ask the bot's operator to raise {setting}.")
RATE_LIMITED = N_("Slow down a little: I take up to {limit} requests a minute from each person. Try again in {wait}.")

# /usage, in plain words; adapters render the numbers in core.flow.access.UsageReport with these.
USAGE_HERE = N_("Used here today: {total:,} tokens ({audio:,} audio, {input:,} input, {output:,} output).")
USAGE_AUDIO = N_("Audio heard here today: {length}.")
USAGE_LIMITED = N_("{who}: {used:,} of {limit:,} tokens used, {left:,} left.")
USAGE_UNLIMITED = N_("{who}: {used:,} tokens used, no limit.")
USAGE_RESETS = N_("Budgets reset at midnight UTC, in {wait}.")
USAGE_RATE = N_("Up to {limit} requests a minute each.")
USAGE_TERMINAL = N_("The terminal (earshot commands) used {used:,} tokens today, outside these budgets.")
USAGE_TOP_USERS = N_("Top users today:")
USAGE_YOU = N_("You")                  # the {who} of USAGE_LIMITED and USAGE_UNLIMITED
USAGE_THIS_CHAT = N_("This chat")
USAGE_EVERYONE = N_("Everyone")
USAGE_TOP_CHATS = N_("Top chats today:")

# Group digests. {prefix} is how the platform spells a command: "/" in Telegram, "/earshot " in Slack.
DIGEST_HELP = N_("Digests: {prefix}digest on makes me listen quietly to this group's voice notes (admins only; off "
               "by default); {prefix}digest, or {prefix}digest 2h / 24h / 7d, sums them up; {prefix}digest daily "
               "09:00 Europe/Berlin posts one every day. While on, I store a transcript of each voice note with who "
               "sent it and when, for {days}. {prefix}digest off stops listening; {prefix}forget (admins) "
               "deletes everything I keep for this chat.")
DIGEST_USAGE = N_("Try {prefix}digest (since the last one), {prefix}digest 2h, 24h or 7d, {prefix}digest on, "
                "{prefix}digest off, or {prefix}digest daily 09:00 (optionally with a time zone, like Europe/Berlin).")
DIGEST_BAD_ZONE = N_("Unknown time zone: {zone}. Use a name like Europe/Berlin, America/New_York or UTC, "
                   "for example: {prefix}digest daily 09:00 Europe/Berlin")
DIGEST_ADMINS_ONLY = N_("Only this chat's admins can do that.")
DIGEST_ADMIN_UNKNOWN = N_("I couldn't check whether you're an admin here, so I left things as they were. "
                          "Please try again.")
DIGEST_GROUPS_ONLY = N_("Digests are for group chats and channels: add me to one and use {prefix}digest on there.")
DIGEST_ON = N_("Digests are on: from now on I transcribe this chat's voice notes quietly and keep the transcripts, "
             "with who sent them and when, for {days}. {prefix}digest sums them up; {prefix}digest off stops "
             "listening; {prefix}forget deletes everything.")
DIGEST_OFF = N_("Digests are off: I've stopped listening here (and stopped any daily digest). What I stored is kept "
              "until it expires; {prefix}forget deletes it now.")
DIGEST_DAILY = N_("Every day at {time} ({zone}) I'll post a digest here, starting {first}. I'm listening from now on.")
DIGEST_DAILY_OFF = N_("No more daily digests here. I'm still listening: {prefix}digest sums up on request.")
DIGEST_IS_OFF = N_("Digests are off here, so I have nothing to sum up. "
                   "An admin can turn them on with {prefix}digest on.")
DIGEST_NOTHING_NEW = N_("No voice notes since the last digest: nothing to sum up.")
DIGEST_NOTHING_YET = N_("I haven't heard any voice notes here yet: nothing to sum up.")
DIGEST_NOTHING_IN = N_("No voice notes in the last {period}: nothing to sum up.")
DIGEST_TOO_COSTLY_USER = N_("That digest would take about {need:,} tokens, and you have {left:,} left today. "
                            "Ask for a shorter span, like {prefix}digest 2h, or try again after midnight UTC, "
                            "in {wait}.")
DIGEST_TOO_COSTLY_CHAT = N_("That digest would take about {need:,} tokens, and this chat has {left:,} left today. "
                            "Ask for a shorter span, like {prefix}digest 2h, or try again after midnight UTC, "
                            "in {wait}.")
DIGEST_TOO_COSTLY_GLOBAL = N_("That digest would take about {need:,} tokens, and I have {left:,} left today. "
                              "Ask for a shorter span, like {prefix}digest 2h, or try again after midnight UTC, "
                              "in {wait}.")
DIGEST_HEADER = N_("{title}: {notes}, {minutes}.")
DIGEST_TITLE = N_("Digest")
DIGEST_TITLE_SINCE = N_("Digest since the last one")
DIGEST_TITLE_PERIOD = N_("Digest of the last {period}")
DIGEST_WORKING = N_("Summing up this chat's voice notes…")
FORGOTTEN = N_("Done: I've deleted everything I stored for this chat (transcripts, history, usage and digest "
             "settings), and digests are off.")
DIGEST_CANT_HEAR = N_("Heads-up: Telegram shows me voice notes in groups only if I'm an admin here or my privacy mode "
                    "is off (@BotFather → /setprivacy → Disable, then add me again).")

# Audio by link (core.audio.links)
LINK_BAD = N_("That link isn't one I can fetch: send an http:// or https:// link to an audio or video file.")
LINK_PRIVATE = N_("I can't fetch that link: it points to a private or local network address.")
LINK_UNREACHABLE = N_("I couldn't fetch that link: {reason}.")
LINK_NOT_AUDIO = N_("That link leads to a web page ({content_type}), not an audio file. "
                  "Send a direct link to the file (it usually ends in .mp3, .m4a, .ogg, .wav…).")
LINK_TOO_MANY_REDIRECTS = N_("I couldn't fetch that link: it redirects more than {limit} times.")
LINK_TIMEOUT = N_("That link took too long to download (over {seconds:.0f} s).")

# The buttons under an answer about audio (Telegram buttons, Slack buttons and menu), and the languages offered
BUTTON_TRANSCRIPT = N_("Transcript")
BUTTON_SUMMARY = N_("Summary")
BUTTON_MOOD = N_("Mood")
BUTTON_SOUNDS = N_("Sounds")
BUTTON_TRANSLATE = N_("Translate")
# core.config.QUICK_LANGUAGES by code, as a button names them
LANGUAGE_NAMES = {"en": N_("English"), "es": N_("Spanish"), "fr": N_("French"), "de": N_("German"),
                  "zh": N_("Chinese"), "ru": N_("Russian")}

# Transcripts as files
TRANSCRIPT_FILES = N_("The whole transcript, as text and as subtitles:")

# Counts inside other messages: {days} of DIGEST_HELP and DIGEST_ON, {notes} and {minutes} of DIGEST_HEADER,
# spans like the {period} of a digest and the {waited} of JOB_EXPIRED
VOICE_NOTES = Nn_("{n} voice note", "{n} voice notes")
WEEKS = Nn_("{n} week", "{n} weeks")
DAYS = Nn_("{n} day", "{n} days")
HOURS = Nn_("{n} hour", "{n} hours")
MINUTES = Nn_("{n} minute", "{n} minutes")
SECONDS = Nn_("{n} second", "{n} seconds")
# how long until budgets come back or a rate limit lifts, short: "40 s", "12 min", "3 h", "3 h 20 min"
WAIT_SECONDS = N_("{n} s")
WAIT_MINUTES = N_("{n} min")
WAIT_HOURS = N_("{hours} h")
WAIT_HOURS_MINUTES = N_("{hours} h {minutes} min")

# What the adapters say while they work, and after /reset
LISTENING = N_("Listening…")
LISTENING_PART = N_("Listening… part {part} of {total}")
LISTENING_WRITING = N_("Listening… all {total} parts heard, writing the answer")
RESET_DONE = N_("Done: I've forgotten this conversation.")

# /lang. {language} is a language's own name (Deutsch, 日本語), {languages} the codes and names to choose from.
LANG_CURRENT = N_("I speak {language} here. To change it: {prefix}lang followed by one of {languages}.")
LANG_SET = N_("From now on I speak {language} here, and write summaries and answers in it too.")
LANG_UNKNOWN = N_("I don't speak {code}, sorry. I can do {languages}.")
LANG_AUTO = N_("I'll speak each person's app language here again.")

# /spoken: the language spoken in a chat's audio, told to the recognizer (EARSHOT_ASR_MODEL) with each transcript
SPOKEN_CURRENT = N_("Transcripts here expect {language}. {prefix}spoken auto lets the recognizer detect it again.")
SPOKEN_DETECTED = N_("The recognizer detects the language spoken here. If it guesses wrong on short clips, "
                     "pin it: {prefix}spoken followed by one of {languages}.")
SPOKEN_SET = N_("Transcripts here now expect {language}. {prefix}spoken auto undoes it.")
SPOKEN_AUTO = N_("The recognizer detects the language spoken here again.")
SPOKEN_UNKNOWN = N_("The recognizer can't be told {code}. It takes {languages}, or auto.")
SPOKEN_NO_RECOGNIZER = N_("Transcripts here come from {model}, which detects the language itself: there is no "
                          "language to pin.")

# /model: which of the operator's allowed models (EARSHOT_MODELS) answers in a chat; {models}: their names.
MODEL_CURRENT = N_("This chat uses {model}. Models to choose from: {models}. "
                   "To switch (chat admins): {prefix}model NAME")
MODEL_SET = N_("From now on {model} answers in this chat.")
MODEL_UNKNOWN = N_("{model} isn't available here. Choose one of: {models}.")
MODEL_ADMINS_ONLY = N_("Only this chat's admins can switch its model.")
# a slash command word earshot doesn't know
UNKNOWN_COMMAND = N_("I don't know `/earshot {command}`.")
# a Telegram command earshot doesn't know: the nearest one it does, and /help
UNKNOWN_COMMAND_NEAR = N_("I don't know /{command}. Did you mean /{near}? /help lists everything I do.")
UNKNOWN_COMMAND_HELP = N_("I don't know /{command}. /help lists everything I do.")


# The same problems said on a terminal (English, stderr), naming the setting or option that changes the outcome;
# the CLI picks these by the chat message an error carries.
TERMINAL: dict[str, str] = {
    TOO_LONG: "that audio is too long: earshot takes up to {limit} per file; raise EARSHOT_MAX_AUDIO_SECONDS "
              "to allow longer ones",
    TOO_BIG: "that file is {size_mb:.1f} MB, over the {limit_mb:.0f} MB limit; raise EARSHOT_MAX_FILE_MB to allow "
             "bigger files",
    LINK_PRIVATE: "that link points to a private or local network address; set EARSHOT_URL_ALLOW_PRIVATE=1 to let "
                  "links reach such addresses",
    LINK_BAD: "earshot fetches http:// and https:// links only; for anything else, download the file and give its path",
    LINK_NOT_AUDIO: "that link leads to a web page ({content_type}), not an audio file: give a direct link to the file",
    NOT_AUDIO: "couldn't read that as audio: give an audio or video file (ogg, mp3, m4a, wav, flac, amr, webm, mp4…)",
    NO_SPEECH: "{model} answered in text only this time; nothing was written to the --speak file",
    LINK_TIMEOUT: "that link took too long to download (over {seconds:.0f} s); raise EARSHOT_URL_TIMEOUT to wait "
                  "longer",
    DECODE_TIMEOUT: "that file took too long to decode (it may be damaged); raise EARSHOT_FFMPEG_TIMEOUT to wait "
                    "longer",
}
FILE_IS_DIRECTORY = "{path} is a directory: give an audio or video file inside it"
LINK_SCHEME_CLI = ("earshot fetches http:// and https:// links only, not {scheme}://; download the file and give "
                   "its path")
CANNOT_SPEAK_CLI = ("EARSHOT_MODEL={model} can't speak, so --speak has nothing to write: set EARSHOT_MODEL to a model "
                    "that speaks ({models})")
SPEAK_UNWRITABLE = "can't write the spoken answer to {path}: {reason}; give --speak a file in a writable directory"

# Discord (bots.discord): what the operator reads on stderr, then what users read in chat
DISCORD_NO_TOKEN = ("No Discord bot token: set DISCORD_BOT_TOKEN (Developer Portal → your application → Bot → "
                    "Reset Token).")
DISCORD_BAD_TOKEN = ("Discord refused DISCORD_BOT_TOKEN: copy the bot's token again from the Developer Portal "
                     "(your application → Bot → Reset Token).")
DISCORD_NO_CONTENT_INTENT = ("Discord refused the message content intent: switch on MESSAGE CONTENT INTENT under "
                             "Bot → Privileged Gateway Intents in the Developer Portal, then start earshot again.")
DISCORD_UNREACHABLE = "Can't reach Discord at {url}: {reason}. Check DISCORD_API_URL and the network."
DISCORD_FILE_UNAVAILABLE = N_("I couldn't fetch that file from Discord (its link may have expired). "
                              "Please send it again.")
AUTO_ON = N_("From now on I transcribe every voice message in this channel. `/earshot auto off` stops it.")
AUTO_OFF = N_("I no longer transcribe voice messages here unasked: mention me, or use /earshot.")
AUTO_IS_ON = N_("Every voice message in this channel is transcribed. `/earshot auto off` stops it.")
AUTO_IS_OFF = N_("Voice messages here are transcribed when someone asks. `/earshot auto on` transcribes every one "
                 "(people who can manage the server).")
AUTO_ADMINS_ONLY = N_("Only people who can manage this server can switch automatic transcripts.")
AUTO_IN_DM = N_("In a direct message I answer every voice message anyway.")


def text(message: str, lang: str | None, /, **fmt: object) -> str:
    """A message in a chat's language (a code, a client's locale, or None for English), filled in."""
    return translator(lang).text(message, **fmt)


def count(forms: Plural, n: float, lang: str | None) -> str:
    """"3 minutes" in a chat's language, for the {days}, {notes} and {minutes} of other messages."""
    return translator(lang).plural(forms, n)
DB_DAMAGED = ("The database file {path} can't be read or written ({reason}). Stop earshot, then restore the "
              "file from a backup, or move it aside so earshot starts a new one (`sqlite3 FILE .recover` saves "
              "what is still readable); or set EARSHOT_DB to another file.")
DB_POSTGRES_FAILED = ("The PostgreSQL database at {where} failed ({reason}). Check the server and its log, "
                      "and EARSHOT_DB.")
DB_POSTGRES_UNUSABLE = ("Can't use the PostgreSQL database at {where}: {reason}. Check EARSHOT_DB "
                        "(postgresql://user:password@host:5432/name), that the server is up, and that the role "
                        "may create tables.")
