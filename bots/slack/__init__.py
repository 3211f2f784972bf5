"""The Slack app: DMs, @mentions and `/earshot`, over HTTP (`POST /slack/events`) or Socket Mode."""
from .server import SlackServer, SlackSocketMode, run

__all__ = ["SlackServer", "SlackSocketMode", "run"]
