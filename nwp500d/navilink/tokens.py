"""NaviLink tokens and devices as plain values: parsing, expiry and (de)serialisation, with no IO.

Two credentials with separate lifetimes come out of one sign-in: the JWTs that authorise REST calls, and the AWS
STS credentials that sign the MQTT WebSocket upgrade. Only a full sign-in reliably renews the AWS credentials; a
refresh renews the JWTs and may omit anything else. Both lifetimes are relative (seconds), so the moment each was
received is kept with the tokens, and all moments are aware UTC so a DST change or a naive timestamp cannot shift them.

Everything here is kept out of logs and reprs: a ``Tokens`` printed by accident (a traceback, a debug line) shows
lifetimes, never a secret, and parse errors say which field is wrong without echoing its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nwp500d.clock import parse_iso_utc

DEFAULT_MARGIN_SECS = 300.0
OK_CODE = 200


class MalformedResponse(ValueError):
    """The server answered, but not in a shape we understand. Retriable: usually a transient proxy or API hiccup."""


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC: the cache and the server never mean local time."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso_exact(moment: datetime) -> str:
    # Microseconds, unlike clock.iso_utc, so a cached Tokens reloads equal to the one written.
    return as_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _masked(value: str) -> str:
    return f"<{len(value)} chars>" if value else "<empty>"


@dataclass(frozen=True)
class AwsCredentials:
    """What the MQTT SigV4 signer needs. ``expires_at`` None means the server gave no lifetime (never expires)."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at: datetime | None

    def __repr__(self) -> str:
        expires = _iso_exact(self.expires_at) if self.expires_at else "never"
        return f"AwsCredentials(access_key_id={self.access_key_id[:4]!r}..., expires_at={expires}, secrets hidden)"


@dataclass(frozen=True)
class Tokens:
    id_token: str
    access_token: str
    refresh_token: str
    authentication_expires_in: int
    access_key_id: str
    secret_key: str
    session_token: str
    authorization_expires_in: int | None
    issued_at: datetime
    aws_issued_at: datetime
    user_seq: int | None = None

    def __post_init__(self) -> None:
        # Normalise once here so every comparison below is between aware UTC datetimes.
        object.__setattr__(self, "issued_at", as_utc(self.issued_at))
        object.__setattr__(self, "aws_issued_at", as_utc(self.aws_issued_at))

    def __repr__(self) -> str:
        aws = _iso_exact(self.aws_expires_at) if self.aws_expires_at else "never"
        return (
            f"Tokens(jwt_expires_at={_iso_exact(self.jwt_expires_at)}, aws_expires_at={aws}, "
            f"user_seq={self.user_seq}, access_token={_masked(self.access_token)}, secrets hidden)"
        )

    @property
    def jwt_expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.authentication_expires_in)

    @property
    def aws_expires_at(self) -> datetime | None:
        if self.authorization_expires_in is None:
            return None
        return self.aws_issued_at + timedelta(seconds=self.authorization_expires_in)

    def jwt_expired(self, now: datetime, margin: float = DEFAULT_MARGIN_SECS) -> bool:
        """True ``margin`` seconds early, so a call started now cannot carry a token that dies on the way."""
        return as_utc(now) >= self.jwt_expires_at - timedelta(seconds=margin)

    def aws_expired(self, now: datetime, margin: float = DEFAULT_MARGIN_SECS) -> bool:
        expires = self.aws_expires_at
        return expires is not None and as_utc(now) >= expires - timedelta(seconds=margin)

    def aws_credentials(self) -> AwsCredentials:
        return AwsCredentials(self.access_key_id, self.secret_key, self.session_token, self.aws_expires_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id_token": self.id_token,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "authentication_expires_in": self.authentication_expires_in,
            "access_key_id": self.access_key_id,
            "secret_key": self.secret_key,
            "session_token": self.session_token,
            "authorization_expires_in": self.authorization_expires_in,
            "issued_at": _iso_exact(self.issued_at),
            "aws_issued_at": _iso_exact(self.aws_issued_at),
            "user_seq": self.user_seq,
        }

    @classmethod
    def from_dict(cls, data: object) -> Tokens:
        """Inverse of :meth:`to_dict`. ``aws_issued_at`` and ``user_seq`` may be absent (older or foreign caches)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"tokens: expected a JSON object, got {type(data).__name__}")
        strings = {key: _cached_str(data, key) for key in _CACHED_STRINGS}
        issued_at = _cached_time(data, "issued_at")
        return cls(
            **strings,
            authentication_expires_in=_cached_lifetime(data),
            authorization_expires_in=_cached_int(data, "authorization_expires_in", optional=True),
            issued_at=issued_at,
            aws_issued_at=_cached_time(data, "aws_issued_at") if data.get("aws_issued_at") is not None else issued_at,
            user_seq=_cached_int(data, "user_seq", optional=True, positive=False),
        )


_CACHED_STRINGS = ("id_token", "access_token", "refresh_token", "access_key_id", "secret_key", "session_token")


def _cached_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"tokens: {key!r} is missing or not a non-empty string")
    return value


def _cached_int(data: Mapping[str, Any], key: str, *, optional: bool, positive: bool = True) -> int | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (positive and value <= 0):
        raise ValueError(f"tokens: {key!r} is missing or not a {'positive ' if positive else ''}integer")
    return value


def _cached_lifetime(data: Mapping[str, Any]) -> int:
    value = _cached_int(data, "authentication_expires_in", optional=False)
    assert value is not None  # not optional: _cached_int raised instead
    return value


def _cached_time(data: Mapping[str, Any], key: str) -> datetime:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"tokens: {key!r} is missing or not an ISO-8601 string")
    try:
        return parse_iso_utc(value)
    except ValueError:
        raise ValueError(f"tokens: {key!r} is not an ISO-8601 timestamp") from None


# ---------------------------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Envelope:
    """Every NaviLink answer: ``{"code", "msg", "data"}``. ``code`` 200 is success whatever the HTTP status says."""

    code: int
    msg: str
    data: Any = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.code == OK_CODE


def parse_envelope(body: object) -> Envelope:
    if not isinstance(body, Mapping):
        raise MalformedResponse(f"expected a JSON object envelope, got {type(body).__name__}")
    code = body.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise MalformedResponse("envelope has no integer 'code'")
    msg = body.get("msg")
    return Envelope(code, msg if isinstance(msg, str) else "", body.get("data"))


def _success_data(body: object, what: str) -> Any:
    envelope = parse_envelope(body)
    if not envelope.ok:
        raise MalformedResponse(f"{what}: envelope code {envelope.code}, expected {OK_CODE}")
    return envelope.data


def _required_str(fields: Mapping[str, Any], key: str, what: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"{what}: {key!r} is missing or not a non-empty string")
    return value


def _lifetime(fields: Mapping[str, Any], key: str, what: str) -> int | None:
    """Seconds as a positive integer; integral floats are accepted because JSON encoders differ."""
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MalformedResponse(f"{what}: {key!r} is not a positive number of seconds")
    return value


def parse_sign_in(body: object, now: datetime) -> Tokens:
    """Tokens from a ``/user/sign-in`` answer received at ``now``; ``data.tokens`` is accepted for ``data.token``."""
    what = "sign-in response"
    data = _success_data(body, what)
    if not isinstance(data, Mapping):
        raise MalformedResponse(f"{what}: 'data' is not an object")
    fields = data.get("token")
    if fields is None:
        fields = data.get("tokens")
    if not isinstance(fields, Mapping):
        raise MalformedResponse(f"{what}: 'data.token' is missing or not an object")
    jwt_lifetime = _lifetime(fields, "authenticationExpiresIn", what)
    if jwt_lifetime is None:
        raise MalformedResponse(f"{what}: 'authenticationExpiresIn' is missing")
    user_info = data.get("userInfo")
    user_seq = user_info.get("userSeq") if isinstance(user_info, Mapping) else None
    received = as_utc(now)
    return Tokens(
        id_token=_required_str(fields, "idToken", what),
        access_token=_required_str(fields, "accessToken", what),
        refresh_token=_required_str(fields, "refreshToken", what),
        authentication_expires_in=jwt_lifetime,
        access_key_id=_required_str(fields, "accessKeyId", what),
        secret_key=_required_str(fields, "secretKey", what),
        session_token=_required_str(fields, "sessionToken", what),
        authorization_expires_in=_lifetime(fields, "authorizationExpiresIn", what),
        issued_at=received,
        aws_issued_at=received,
        user_seq=user_seq if isinstance(user_seq, int) and not isinstance(user_seq, bool) else None,
    )


def parse_refresh(body: object, previous: Tokens, now: datetime) -> Tokens:
    """New JWTs from an ``/auth/refresh`` answer; whatever it leaves out is carried over from ``previous``.

    The AWS credentials and their issue time are always kept, even if the answer carries AWS fields: the docs
    disagree on whether it does, and if the server merely echoed the current credentials, dating them ``now`` would
    make expired credentials look fresh. A full sign-in is the one trusted way to renew them.
    """
    what = "refresh response"
    data = _success_data(body, what)
    if not isinstance(data, Mapping):
        raise MalformedResponse(f"{what}: 'data' is not an object")
    wrapped = data.get("token")
    fields: Mapping[str, Any] = wrapped if isinstance(wrapped, Mapping) else data
    access_token = _required_str(fields, "accessToken", what)
    jwt_lifetime = _lifetime(fields, "authenticationExpiresIn", what) or previous.authentication_expires_in

    def optional_str(key: str, fallback: str) -> str:
        value = fields.get(key)
        return value if isinstance(value, str) and value else fallback

    return Tokens(
        id_token=optional_str("idToken", previous.id_token),
        access_token=access_token,
        refresh_token=optional_str("refreshToken", previous.refresh_token),
        authentication_expires_in=jwt_lifetime,
        access_key_id=previous.access_key_id,
        secret_key=previous.secret_key,
        session_token=previous.session_token,
        authorization_expires_in=previous.authorization_expires_in,
        issued_at=as_utc(now),
        aws_issued_at=previous.aws_issued_at,
        user_seq=previous.user_seq,
    )


# ---------------------------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Device:
    """One water heater on the account. ``mac_address`` is 12 lowercase hex digits, as MQTT topics spell it."""

    mac_address: str
    additional_value: str
    device_type: int
    device_name: str
    home_seq: int | None
    connected: int | None  # the server's code: 1 disconnected, 2 connected

    @property
    def online(self) -> bool | None:
        return None if self.connected is None else self.connected == 2

    def __repr__(self) -> str:
        # The MAC identifies a household; the last four digits are enough to tell devices apart in a log.
        return (
            f"Device(mac_address='...{self.mac_address[-4:]}', additional_value={self.additional_value!r}, "
            f"device_type={self.device_type}, device_name={self.device_name!r}, home_seq={self.home_seq}, "
            f"connected={self.connected})"
        )


_HEX = frozenset("0123456789abcdef")


def _optional_int(info: Mapping[str, Any], key: str) -> int | None:
    value = info.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_device(item: object, index: int) -> Device:
    what = f"device list entry {index}"
    if not isinstance(item, Mapping):
        raise MalformedResponse(f"{what}: not an object")
    info = item.get("deviceInfo")
    if not isinstance(info, Mapping):
        raise MalformedResponse(f"{what}: 'deviceInfo' is missing or not an object")
    mac = _required_str(info, "macAddress", what).lower().replace(":", "").replace("-", "")
    if len(mac) != 12 or not set(mac) <= _HEX:
        raise MalformedResponse(f"{what}: 'macAddress' is not 12 hex digits")
    additional = info.get("additionalValue")
    if isinstance(additional, int) and not isinstance(additional, bool):
        additional = str(additional)
    if not isinstance(additional, str):
        raise MalformedResponse(f"{what}: 'additionalValue' is missing or not a string")
    device_type = _optional_int(info, "deviceType")
    if device_type is None:
        raise MalformedResponse(f"{what}: 'deviceType' is missing or not an integer")
    name = info.get("deviceName")
    return Device(
        mac_address=mac,
        additional_value=additional,
        device_type=device_type,
        device_name=name if isinstance(name, str) else "",
        home_seq=_optional_int(info, "homeSeq"),
        connected=_optional_int(info, "connected"),
    )


def parse_device_list(body: object) -> list[Device]:
    """Devices from a ``/device/list`` answer. An account with none may answer ``data: null``."""
    data = _success_data(body, "device list")
    if data is None:
        return []
    if not isinstance(data, list):
        raise MalformedResponse("device list: 'data' is not a list")
    return [_parse_device(item, index) for index, item in enumerate(data)]
