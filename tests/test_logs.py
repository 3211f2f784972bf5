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


def test_json_lines_carry_the_request_fields_and_stay_masked(capsys):
    import json

    from core.logs import setup_logging
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(logging.INFO, ["sk-secret-value"], "json")
        log = logging.getLogger("earshot.test")
        log.info("handled ok", extra={"earshot": {"platform": "slack", "chat": "C1", "tokens": 12}})
        try:
            raise RuntimeError("boom sk-secret-value")
        except RuntimeError:
            log.exception("failed with %s", "sk-secret-value")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "handled ok" and lines[0]["platform"] == "slack" and lines[0]["tokens"] == 12
    assert lines[0]["level"] == "INFO" and lines[0]["time"].endswith("Z")
    assert lines[1]["message"] == "failed with ***" and "RuntimeError: boom ***" in lines[1]["exception"]
    assert "sk-secret-value" not in json.dumps(lines)
