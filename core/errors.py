"""earshot's typed errors.

    EarshotError                 .user_text(lang): one line for the user in their language (.user_message: in
                                 English); .operator_message: what to fix
      InputError                 something the user sent or asked (never the operator's fault)
        AudioError               file can't be read, is empty, silent, too big, too long
        NeedsAudio / NeedsText   a command without the audio or words it needs
        VoiceUnavailable         spoken answers asked of a model that can't speak, or in a voice it lacks
        AudioExpired             a button or link to audio no longer kept (retention, forget)
      ModelError                 the model service said no
        ModelAuthError           bad or missing key, no access to the model  (operator)
        QuotaExhausted           the free quota is used up                    (operator)
        ModelThrottled           rate limited; try later                      (retryable)
        ModelUnavailable         5xx, timeouts, connection errors             (retryable)
        ContentRejected          content inspection refused the input
        ModelInputError          the service rejected the audio or parameters
        BadModelResponse         a body we can't parse (a proxy's HTML page)
      AccessRefused              not on the allowed lists, over a budget, or too many requests
      StorageError               the database can't be opened or used          (operator)
        AnswerNotSaved           ... after an answer was obtained: .reply still holds it
"""
from __future__ import annotations

from collections.abc import Mapping

from core.words import messages


class EarshotError(Exception):
    """Base: carries the user-facing message (a core.words.messages id and the values to fill in, so each chat
    hears it in its own language); operator errors also say what to fix."""

    operator = False      # True: the operator must act; the user only gets an apology
    retryable = False
    silent = False        # True: the user was already told; say nothing this time

    def __init__(self, user_message: str, operator_message: str | None = None, *,
                 fmt: Mapping[str, object] | None = None) -> None:
        english = user_message.format(**fmt) if fmt else user_message
        super().__init__(operator_message or english)
        self.message = user_message          # the message id (English, with its {placeholders})
        self.fmt = dict(fmt or {})           # values for them; core.words.amounts.Span values are said per language
        self.user_message = english
        self.operator_message = operator_message or english

    def user_text(self, lang: str | None) -> str:
        """What the user is told, in a chat's language (a code, a client's locale, or None: English)."""
        return messages.text(self.message, lang, **self.fmt)


class InputError(EarshotError):
    pass


class AudioError(InputError):
    pass


class NeedsAudio(InputError):
    pass


class NeedsText(InputError):
    pass


class VoiceUnavailable(InputError):
    pass


class AudioExpired(InputError):
    def __init__(self, user_message: str = messages.AUDIO_EXPIRED, operator_message: str | None = None) -> None:
        super().__init__(user_message, operator_message)


class ModelError(EarshotError):
    def __init__(self, user_message: str, operator_message: str | None = None, *,
                 status: int | None = None, code: str | None = None, request_id: str | None = None,
                 retry_after: float | None = None, fmt: Mapping[str, object] | None = None) -> None:
        super().__init__(user_message, operator_message, fmt=fmt)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after


class ModelAuthError(ModelError):
    operator = True

    def __init__(self, operator_message: str = messages.BAD_KEY_CLI, **kw) -> None:
        super().__init__(messages.MISCONFIGURED, operator_message, **kw)


class QuotaExhausted(ModelError):
    operator = True

    def __init__(self, operator_message: str, **kw) -> None:
        super().__init__(messages.QUOTA_USED_UP, operator_message, **kw)


class ModelThrottled(ModelError):
    retryable = True


class ModelUnavailable(ModelError):
    retryable = True
    unreachable = False   # the host can't be reached at all (DNS failure, connection refused): retried briefly


class ContentRejected(ModelError):
    pass


class ModelInputError(ModelError):
    pass


class BadModelResponse(ModelError):
    retryable = True


class AccessRefused(EarshotError):
    """Refused before anything is spent; `silent` when this user has been told already."""

    def __init__(self, user_message: str, operator_message: str | None = None, *, silent: bool = False,
                 fmt: Mapping[str, object] | None = None) -> None:
        super().__init__(user_message, operator_message, fmt=fmt)
        self.silent = silent


class StorageError(EarshotError):
    """The database file can't be opened: a directory, not SQLite, or not writable. The operator fixes it."""

    operator = True

    def __init__(self, operator_message: str) -> None:
        super().__init__(messages.MISCONFIGURED, operator_message)


class AnswerNotSaved(StorageError):
    """The model answered (and was paid), then the database failed to keep the answer or the turn: `reply`
    is the answer, still worth giving (the CLI prints it, then exits with the storage error)."""

    def __init__(self, operator_message: str, reply: object) -> None:
        super().__init__(operator_message)
        self.reply = reply
