"""The WhatsApp adapter: Meta's Cloud API webhook (`earshot whatsapp`), over the same core as Telegram and Slack."""
from .server import WhatsAppServer, run

__all__ = ["WhatsAppServer", "run"]
