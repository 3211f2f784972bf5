"""One scenario driver per adapter (see tests/scenarios/driver.py); the suite runs against each one listed here."""
from __future__ import annotations

from tests.scenarios.driver import Driver
from tests.scenarios.drivers.discord import DiscordDriver
from tests.scenarios.drivers.slack import SlackDriver
from tests.scenarios.drivers.telegram import TelegramDriver
from tests.scenarios.drivers.whatsapp import WhatsAppDriver

DRIVERS: dict[str, type[Driver]] = {"telegram": TelegramDriver, "slack": SlackDriver, "whatsapp": WhatsAppDriver,
                                   "discord": DiscordDriver}
