"""Redaction of secrets and personal data, and the normalisation of every error shape awscrt produces."""

from __future__ import annotations

import enum

import pytest

from nwp500d.errors import describe_error
from nwp500d.redact import REDACTED, Redactor
from tests.fakes import CrtLikeError

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"


def test_text_patterns() -> None:
    text = (f"user owner@example.com token {JWT} key ASIAABCDEFGHIJKLMNOP mac 04:78:63:32:FC:A0 "
            "topic cmd/52/navilink-04786332fca0/st")
    out = Redactor().text(text)
    for secret in ("owner@example.com", JWT, "ASIAABCDEFGHIJKLMNOP", "04:78:63:32:FC:A0", "04786332fca0"):
        assert secret not in out
    assert "cmd/52/navilink-<mac>/st" in out


def test_macs_kept_when_asked() -> None:
    assert "04:78:63:32:fc:a0" in Redactor(redact_macs=False).text("mac 04:78:63:32:fc:a0")


def test_known_secrets_longest_first() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.text("x abcdefgh y abcd") == f"x {REDACTED} y {REDACTED}"
    redactor.add_secret("zzzzzz")
    redactor.add_secret(None)
    redactor.add_secret("ab")  # too short to be a secret worth scrubbing everywhere
    assert redactor.text("zzzzzz ab") == f"{REDACTED} ab"


def test_values_by_key() -> None:
    data = {"accessToken": "t", "nested": [{"secretKey": "s", "ok": "fine"}], "macAddress": "aa", "password": None}
    assert Redactor().value(data) == {
        "accessToken": REDACTED, "nested": [{"secretKey": REDACTED, "ok": "fine"}], "macAddress": REDACTED,
        "password": None,
    }
    assert Redactor(redact_macs=False).value({"macAddress": "aa"}) == {"macAddress": "aa"}


class ConnectReturnCode(enum.IntEnum):
    NOT_AUTHORIZED = 5


@pytest.mark.parametrize(
    ("error", "name", "code"),
    [
        (CrtLikeError("AWS_ERROR_MQTT_UNEXPECTED_HANGUP", 5134), "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", 5134),
        (RuntimeError("38 (AWS_ERROR_INVALID_STATE): bad state"), "AWS_ERROR_INVALID_STATE", 38),
        (RuntimeError("5131 (AWS_ERROR_MQTT_NOT_CONNECTED)"), "AWS_ERROR_MQTT_NOT_CONNECTED", 5131),
        (Exception(ConnectReturnCode.NOT_AUTHORIZED), "CONNACK_NOT_AUTHORIZED", 5),
        (TimeoutError(), "TIMEOUT", None),
        (MemoryError(), "MemoryError", None),
        (ValueError("odd"), "ValueError", None),
    ],
)
def test_error_shapes(error: BaseException, name: str, code: int | None) -> None:
    info = describe_error(error)
    assert (info.name, info.code) == (name, code)
    assert info.message


def test_no_error() -> None:
    info = describe_error(None)
    assert (info.name, info.code, info.message) == (None, None, None)
