"""Keep secrets and personal data out of everything a user may paste into a bug report.

Applied to every export and every log line. Two layers: values under sensitive keys are replaced whole, and free
text is scrubbed by pattern (emails, JWTs, AWS key ids, MAC addresses) and by the exact secrets the daemon knows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "**REDACTED**"

SENSITIVE_KEYS = frozenset(
    {
        "password", "password_file_contents", "email", "userid", "user_id",
        "accesstoken", "access_token", "idtoken", "id_token", "refreshtoken", "refresh_token",
        "accesskeyid", "access_key_id", "secretkey", "secret_key", "secret_access_key",
        "sessiontoken", "session_token", "authorization",
    }
)

_CACHE_LIMIT = 4096
MAC_KEYS = frozenset({"macaddress", "mac_address", "mac"})

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_MAC_SEPARATED = re.compile(r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b")
_MAC_IN_TOPIC = re.compile(r"(?<=navilink-)[0-9A-Fa-f]{12}\b")


class Redactor:
    """Scrubs text and JSON-like values. ``redact_macs=False`` keeps MACs for users who ask for them."""

    def __init__(self, secrets: Iterable[str] = (), *, redact_macs: bool = True) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._redact_macs = redact_macs
        # Error texts repeat (a handful of CRT messages); scrubbing each once keeps recording cheap.
        self._cache: dict[str, str] = {}

    @property
    def redact_macs(self) -> bool:
        return self._redact_macs

    def add_secret(self, secret: str | None) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)
            self._cache.clear()

    def text(self, text: str) -> str:
        cached = self._cache.get(text)
        if cached is None:
            cached = self._scrub(text)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = cached
        return cached

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _JWT.sub("<jwt>", text)
        text = _AWS_KEY_ID.sub("<aws-key-id>", text)
        text = _EMAIL.sub("<email>", text)
        if self._redact_macs:
            text = _MAC_SEPARATED.sub("<mac>", text)
            text = _MAC_IN_TOPIC.sub("<mac>", text)
        return text

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                key: (REDACTED if self._hides(key) and item is not None else self.value(item))
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value


    def _hides(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        normal = key.lower().replace("-", "_")
        return normal in SENSITIVE_KEYS or (self._redact_macs and normal in MAC_KEYS)
