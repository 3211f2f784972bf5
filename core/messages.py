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
CONTENT_REJECTED = "The model refused that audio or question on content grounds."
MODEL_REJECTED_INPUT = "The model couldn't process that audio: {detail}"
BAD_MODEL_RESPONSE = "The model sent an answer I couldn't read. Please try again."
MISCONFIGURED = "Sorry, I'm misconfigured and can't answer right now. The operator has been told."
BAD_KEY_CLI = "The DashScope API key was refused: check DASHSCOPE_API_KEY."
NO_KEY_CLI = "No DashScope API key: set DASHSCOPE_API_KEY."
INTERNAL = "Sorry, something went wrong on my side. Please try again."

NO_AUDIO_YET = "There's no audio here yet. Send a voice note or an audio file, then ask again, or reply to one with the command."
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
AUDIO_ITEM_TOO_BIG = "That audio piece is too big to send to the model: {size_mb:.1f} MB encoded, over the 10 MB limit."

SLACK_FILE_UNAVAILABLE = "I couldn't fetch that file from Slack. Please share it again."
SLACK_NO_CREDENTIALS = ("No Slack credentials: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
                        "(and SLACK_APP_TOKEN for Socket Mode).")
SLACK_BAD_TOKEN = "Slack refused SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page."
SLACK_NOT_YET = "`/earshot {word}` isn't available yet."

NO_TELEGRAM_TOKEN = "No Telegram bot token: set TELEGRAM_BOT_TOKEN (ask @BotFather for one)."
BAD_TELEGRAM_TOKEN = "Telegram refused the bot token: check TELEGRAM_BOT_TOKEN (from @BotFather)."
SLACK_BAD_APP_TOKEN = ("Slack refused SLACK_APP_TOKEN ({error}): create an app-level token with the connections:write "
                       "scope (Basic Information -> App-Level Tokens) and enable Socket Mode.")
