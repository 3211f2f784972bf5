import logging

from core.logs import RedactingFilter


def test_secrets_are_masked_in_messages_and_tracebacks(caplog):
    log = logging.getLogger("earshot.test")
    f = RedactingFilter(["sk-secret-value"])
    caplog.handler.addFilter(f)
    log.warning("GET https://api.telegram.org/bot123456:ABCdefGhIJKlmnoPQRstuVWXyz012345/getMe")
    log.warning("key is %s", "sk-secret-value")
    log.warning("header Authorization: Bearer xoxb-1-2-3")
    try:
        raise RuntimeError("boom sk-secret-value")
    except RuntimeError:
        log.exception("failed")
    text = caplog.text
    assert "sk-secret-value" not in text
    assert "ABCdefGhIJKlmnoPQRstuVWXyz012345" not in text
    assert "xoxb-1-2-3" not in text
    assert "***" in text
