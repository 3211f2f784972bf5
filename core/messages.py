"""Every sentence earshot says to a user about a problem, in one place."""

NOT_AUDIO = "I couldn't read that as audio. Send a voice note or an audio file (ogg, mp3, m4a, wav, flac, amr, webm…)."
EMPTY_FILE = "That file is empty."
NO_AUDIO_TRACK = "That file has no audio track."
SILENT = "I listened, but found no speech or sound in it."
TOO_BIG = "That file is too big: {size_mb:.1f} MB, and the limit is {limit_mb:.0f} MB."
TOO_BIG_TELEGRAM = ("That file is over the 20 MB that Telegram lets bots download. "
                    "Send a shorter clip, or run earshot with a self-hosted Bot API server to lift the limit.")
TOO_LONG = "That audio is too long: I handle up to {limit} per file."
DECODE_TIMEOUT = "That file took too long to decode; it may be damaged."
NO_SAMPLES = "That file holds no sound: it may be cut short or damaged."
FILE_NOT_FOUND = "No such file: {path}"

MODEL_BUSY = "The model is busy right now. Please try again in a minute."
QUOTA_USED_UP = "The model's free quota is used up, so I can't answer for now. The operator has been told."
MODEL_DOWN = "The model is unavailable right now. Please try again later."
# durable jobs (core.runner): said once while a request waits for the model, and when it waited too long
MODEL_WAITING = "The model is unavailable right now. I'll answer this when it is back."
JOB_EXPIRED = ("I couldn't get an answer from the model within {waited}, so I gave up on this one. "
               "Please send it again later.")
CONTENT_REJECTED = "The model refused that audio or question on content grounds."
MODEL_REJECTED_INPUT = "The model couldn't process that audio: {detail}"
BAD_MODEL_RESPONSE = "The model sent an answer I couldn't read. Please try again."
MISCONFIGURED = "Sorry, I'm misconfigured and can't answer right now. The operator has been told."
BAD_KEY_CLI = "The DashScope API key was refused: check DASHSCOPE_API_KEY."
NO_KEY_CLI = "No DashScope API key: set DASHSCOPE_API_KEY."
INTERNAL = "Sorry, something went wrong on my side. Please try again."

NO_AUDIO_YET = ("There's no audio here yet. Send a voice note or an audio file, then ask again, or reply to one "
                "with the command.")
NEED_QUESTION = "What should I ask about the audio? For example: ask what did she say about Friday?"
NEED_LANGUAGE = "Which language? For example: translate English"
NOTHING_TO_FOLLOW = "Send me a voice note or an audio file first."

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
THROTTLED_OP = "DashScope rate-limited the call ({code}: {detail}) and the retry budget ran out."
MODEL_DOWN_OP = "DashScope failed: {detail}"
BAD_RESPONSE_OP = ("DashScope answered HTTP {status} with a body that is not DashScope JSON ({content_type}: "
                   "{snippet!r}): check DASHSCOPE_HTTP_BASE_URL and any proxy in between.")
AUDIO_ITEM_TOO_BIG = ("That audio piece is too big to send to the model: {size_mb:.1f} MB encoded, over the "
                      "{limit_mb:.0f} MB limit.")

# spoken answers
CANNOT_SPEAK = "The model {model} can't speak, so answers stay in text.{models}"
SPEAKING_MODELS = " Models that speak: qwen3-omni-flash, qwen-omni-turbo."
UNKNOWN_VOICE = "{model} has no voice {voice!r}. Voices: {voices}."
VOICE_ON = "Answers here now come back spoken, in the voice {voice}. /voice off returns to text."
VOICE_OFF = "Answers here are text again."
NO_SPEECH = "{model} answered in text only this time; no spoken answer was written."
VOICE_USAGE = "Use: voice on [VOICE] or voice off."
BAD_KEY_COMPAT_OP = ("{service} refused the API key ({code}): check {variable} and its base URL. DashScope keys are "
                     "per region: a Beijing key fails on dashscope-intl (DASHSCOPE_REGION=singapore), and the reverse.")
FREE_TIER_ONLY_OP = ("DashScope says the free quota of {model} is used up ({code}: {detail}) and the account takes "
                     "free quota only: turn off \"use free tier only\" for the model in Model Studio to pay as you go.")
MODEL_NOT_FOUND_COMPAT_OP = ("{service} has no model {model} ({code}): check EARSHOT_MODEL against the models "
                             "it serves.")
BAD_RESPONSE_COMPAT_OP = ("{service} answered with a body that is not an OpenAI-compatible answer ({detail}): "
                          "check {variable} and any proxy in between.")

SLACK_FILE_UNAVAILABLE = "I couldn't fetch that file from Slack. Please share it again."
SLACK_FILE_EXTERNAL = ("I can't read that file: it is stored outside Slack (a linked or external file). "
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
SLACK_BAD_APP_TOKEN = ("Slack refused SLACK_APP_TOKEN ({error}): create an app-level token with the connections:write "
                       "scope (Basic Information -> App-Level Tokens) and enable Socket Mode.")

# Who may use earshot, and how much. Each is said once, then earshot stays quiet for a while.
NOT_ALLOWED = ("Sorry, I only answer people my owner has let in. If you know them, "
               "ask to be added: your {platform} id is {user_id}.")
NOT_ALLOWED_HERE = "Sorry, I'm not open to this chat. Ask my owner to add it."
USER_BUDGET_USED = ("You've used your {limit:,} tokens for today. "
                    "They come back at midnight UTC, in {wait}.")
CHAT_BUDGET_USED = ("This chat has used its {limit:,} tokens for today. "
                    "They come back at midnight UTC, in {wait}.")
GLOBAL_BUDGET_USED = ("I've used all {limit:,} of today's tokens, to keep the model's free quota from running out. "
                      "I'll answer again after midnight UTC, in {wait}.")
TOO_COSTLY = ("That recording would take about {need:,} tokens to hear, and {whose} {left:,} left today. "
              "Send a shorter clip, or try again after midnight UTC, in {wait}.")
RATE_LIMITED = "Slow down a little: I take up to {limit} requests a minute from each person. Try again in {wait}."

# /usage, in plain words; adapters render the numbers in core.access.UsageReport with these.
USAGE_HERE = "Used here today: {total:,} tokens ({audio:,} audio, {input:,} input, {output:,} output)."
USAGE_LIMITED = "{who}: {used:,} of {limit:,} tokens used, {left:,} left."
USAGE_UNLIMITED = "{who}: {used:,} tokens used, no limit."
USAGE_RESETS = "Budgets reset at midnight UTC, in {wait}."
USAGE_RATE = "Up to {limit} requests a minute each."
USAGE_TOP_USERS = "Top users today:"
USAGE_TOP_CHATS = "Top chats today:"

# Group digests. {prefix} is how the platform spells a command: "/" in Telegram, "/earshot " in Slack.
DIGEST_HELP = ("Digests: {prefix}digest on makes me listen quietly to this group's voice notes (admins only; off "
               "by default); {prefix}digest, or {prefix}digest 2h / 24h / 7d, sums them up; {prefix}digest daily "
               "09:00 Europe/Berlin posts one every day. While on, I store a transcript of each voice note with who "
               "sent it and when, for {days}. {prefix}digest off stops listening; {prefix}forget (admins) "
               "deletes everything I keep for this chat.")
DIGEST_USAGE = ("Try {prefix}digest (since the last one), {prefix}digest 2h, 24h or 7d, {prefix}digest on, "
                "{prefix}digest off, or {prefix}digest daily 09:00 (optionally with a time zone, like Europe/Berlin).")
DIGEST_BAD_ZONE = ("Unknown time zone: {zone}. Use a name like Europe/Berlin, America/New_York or UTC, "
                   "for example: {prefix}digest daily 09:00 Europe/Berlin")
DIGEST_ADMINS_ONLY = "Only this chat's admins can do that."
DIGEST_ADMIN_UNKNOWN = "I couldn't check whether you're an admin here, so I left things as they were. Please try again."
DIGEST_GROUPS_ONLY = "Digests are for group chats and channels: add me to one and use {prefix}digest on there."
DIGEST_ON = ("Digests are on: from now on I transcribe this chat's voice notes quietly and keep the transcripts, "
             "with who sent them and when, for {days}. {prefix}digest sums them up; {prefix}digest off stops "
             "listening; {prefix}forget deletes everything.")
DIGEST_OFF = ("Digests are off: I've stopped listening here (and stopped any daily digest). What I stored is kept "
              "until it expires; {prefix}forget deletes it now.")
DIGEST_DAILY = "Every day at {time} ({zone}) I'll post a digest here, starting {first}. I'm listening from now on."
DIGEST_DAILY_OFF = "No more daily digests here. I'm still listening: {prefix}digest sums up on request."
DIGEST_IS_OFF = "Digests are off here, so I have nothing to sum up. An admin can turn them on with {prefix}digest on."
DIGEST_NOTHING_NEW = "No voice notes since the last digest: nothing to sum up."
DIGEST_NOTHING_YET = "I haven't heard any voice notes here yet: nothing to sum up."
DIGEST_NOTHING_IN = "No voice notes in the last {period}: nothing to sum up."
DIGEST_TOO_COSTLY = ("That digest would take about {need:,} tokens, and {whose} {left:,} left today. "
                     "Ask for a shorter span, like {prefix}digest 2h, or try again after midnight UTC, in {wait}.")
DIGEST_HEADER = "{title}: {notes}, {minutes}."
DIGEST_TITLE = "Digest"
DIGEST_TITLE_SINCE = "Digest since the last one"
DIGEST_TITLE_PERIOD = "Digest of the last {period}"
DIGEST_WORKING = "Summing up this chat's voice notes…"
FORGOTTEN = ("Done: I've deleted everything I stored for this chat (transcripts, history, usage and digest "
             "settings), and digests are off.")
DIGEST_CANT_HEAR = ("Heads-up: Telegram shows me voice notes in groups only if I'm an admin here or my privacy mode "
                    "is off (@BotFather → /setprivacy → Disable, then add me again).")

# Audio by link (core.links)
LINK_BAD = "That link isn't one I can fetch: send an http:// or https:// link to an audio or video file."
LINK_PRIVATE = "I can't fetch that link: it points to a private or local network address."
LINK_UNREACHABLE = "I couldn't fetch that link: {reason}."
LINK_NOT_AUDIO = ("That link leads to a web page ({content_type}), not an audio file. "
                  "Send a direct link to the file (it usually ends in .mp3, .m4a, .ogg, .wav…).")
LINK_TOO_MANY_REDIRECTS = "I couldn't fetch that link: it redirects more than {limit} times."
LINK_TIMEOUT = "That link took too long to download (over {seconds:.0f} s)."

# Transcripts as files
TRANSCRIPT_FILES = "The whole transcript, as text and as subtitles:"

RESET_DONE = "Done: I've forgotten this conversation."

# --- help, as each platform shows it (commands are spelled "/cmd" in Telegram, "/earshot cmd" in Slack) ---
TELEGRAM_HELP = """I listen to voice notes and audio files and answer about them, using Qwen's audio models.

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

In groups I answer when you use a command, mention me, or reply to me."""

TELEGRAM_COMMANDS = [
    ("transcribe", "Word-for-word transcript of the audio"),
    ("summarize", "Summary of the audio"),
    ("sentiment", "The speaker's mood and tone"),
    ("events", "Sounds, music and speech, with times"),
    ("ask", "Ask a question about the audio: /ask <question>"),
    ("translate", "Translate what's said: /translate <language>"),
    ("voice", "Spoken answers: /voice on [VOICE] or /voice off"),
    ("reset", "Forget this conversation"),
    ("usage", "Tokens used today, and what's left"),
    ("digest", "Sum up this group's voice notes: /digest [2h|24h|7d|on|off|daily 09:00]"),
    ("forget", "Delete everything stored for this chat (admins)"),
    ("help", "What I do and how to use me"),
]

SLACK_HELP = """*earshot* listens to audio and answers about it.
• *In a DM:* send a voice clip or an audio file (mp3, m4a, wav, ogg, flac…) or a link to one, maybe with \
a question; type to follow up.
• *In a channel:* @mention me with an audio file, or in a thread that has one.
• `/earshot transcribe` · `summarize` · `sentiment` · `events` — about the latest audio here
• `/earshot ask <question>` · `/earshot translate <language>`
• `/earshot voice on [VOICE]` · `voice off` — answers spoken back as audio in the thread (models that speak)
• `/earshot reset` forgets this conversation · `/earshot usage` shows today's tokens"""
