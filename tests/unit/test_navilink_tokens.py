"""Token parsing, expiry and serialisation: the protocol's documented shapes and the ways they go wrong."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from nwp500d.navilink.tokens import (
    Device,
    MalformedResponse,
    Tokens,
    parse_device_list,
    parse_envelope,
    parse_refresh,
    parse_sign_in,
)

NOW = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
ACCESS = "eyJhbGciOiJSUzI1NiJ9.eyJ0b2tlbl91c2UiOiJhY2Nlc3MifQ.c2lnbmF0dXJlLWFjY2Vzcw"
ID = "eyJhbGciOiJSUzI1NiJ9.eyJ0b2tlbl91c2UiOiJpZCJ9.c2lnbmF0dXJlLWlk"
REFRESH = "eyJhbGciOiJSUzI1NiJ9.eyJ0b2tlbl91c2UiOiJyZWZyZXNoIn0.c2lnbmF0dXJlLXJlZnJlc2g"
KEY_ID = "ASIAEXAMPLE0KEY0ID00"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION = "FwoGZXIvYXdzEXAMPLE-session-token-" + "x" * 64
SECRETS = (ACCESS, ID, REFRESH, KEY_ID, SECRET, SESSION)


def sign_in_body(wrapper: str = "token", **overrides: Any) -> dict[str, Any]:
    token: dict[str, Any] = {
        "idToken": ID, "accessToken": ACCESS, "refreshToken": REFRESH, "authenticationExpiresIn": 3600,
        "accessKeyId": KEY_ID, "secretKey": SECRET, "sessionToken": SESSION, "authorizationExpiresIn": 1800,
    }
    for key, value in overrides.items():
        if value is None:
            token.pop(key, None)
        else:
            token[key] = value
    user = {"userType": "O", "userSeq": 36283}
    return {"code": 200, "msg": "SUCCESS", "data": {"userInfo": user, wrapper: token, "legal": []}}


def signed_in() -> Tokens:
    return parse_sign_in(sign_in_body(), NOW)


def test_sign_in_shape_and_lifetimes() -> None:
    tokens = signed_in()
    assert (tokens.access_token, tokens.refresh_token, tokens.id_token) == (ACCESS, REFRESH, ID)
    assert (tokens.access_key_id, tokens.secret_key, tokens.session_token) == (KEY_ID, SECRET, SESSION)
    assert tokens.user_seq == 36283
    assert tokens.issued_at == tokens.aws_issued_at == NOW
    assert tokens.jwt_expires_at == NOW + timedelta(hours=1)
    assert tokens.aws_expires_at == NOW + timedelta(minutes=30)
    aws = tokens.aws_credentials()
    assert (aws.access_key_id, aws.secret_access_key, aws.session_token) == (KEY_ID, SECRET, SESSION)
    assert aws.expires_at == tokens.aws_expires_at


def test_sign_in_accepts_plural_tokens_wrapper() -> None:
    assert parse_sign_in(sign_in_body("tokens"), NOW) == signed_in()


def test_expiry_counts_the_margin_early() -> None:
    tokens = signed_in()
    assert not tokens.jwt_expired(NOW + timedelta(seconds=3299), margin=300)
    assert tokens.jwt_expired(NOW + timedelta(seconds=3300), margin=300)
    assert not tokens.jwt_expired(NOW + timedelta(seconds=3599), margin=0)
    assert tokens.aws_expired(NOW + timedelta(seconds=1500))  # default margin: 5 min
    assert not tokens.aws_expired(NOW + timedelta(seconds=1499))


def test_missing_aws_lifetime_means_never_expires() -> None:
    tokens = parse_sign_in(sign_in_body(authorizationExpiresIn=None), NOW)
    assert tokens.authorization_expires_in is None
    assert tokens.aws_expires_at is None
    assert not tokens.aws_expired(NOW + timedelta(days=3650))
    assert tokens.aws_credentials().expires_at is None


def test_naive_times_are_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    tokens = parse_sign_in(sign_in_body(), naive)
    assert tokens.issued_at == NOW and tokens.issued_at.tzinfo is UTC
    assert tokens.jwt_expired(naive + timedelta(hours=1))
    assert not tokens.jwt_expired(naive, margin=0)
    cached = tokens.to_dict() | {"issued_at": "2026-11-21T12:00:00.123456", "aws_issued_at": "2026-11-21T12:00:00"}
    restored = Tokens.from_dict(cached)
    assert restored.issued_at == NOW
    assert restored.aws_issued_at == NOW.replace(microsecond=0)


def test_local_offsets_are_converted_not_dropped() -> None:
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert parse_sign_in(sign_in_body(), plus_two).issued_at == NOW


def test_refresh_without_refresh_token_or_aws_fields_copies_them_forward() -> None:
    before = signed_in()
    later = NOW + timedelta(minutes=50)
    new_access = ACCESS + "NEW"
    body = {"code": 200, "msg": "SUCCESS", "data": {"accessToken": new_access, "authenticationExpiresIn": 3600}}
    after = parse_refresh(body, before, later)
    assert after.access_token == new_access
    assert (after.refresh_token, after.id_token) == (REFRESH, ID)
    assert (after.access_key_id, after.secret_key, after.session_token) == (KEY_ID, SECRET, SESSION)
    assert after.issued_at == later
    assert after.aws_issued_at == NOW  # the AWS credentials are as old as before: only the JWT is new
    assert after.aws_expires_at == before.aws_expires_at
    assert after.jwt_expires_at == later + timedelta(hours=1)
    assert after.user_seq == before.user_seq


def test_refresh_with_rotation_and_missing_lifetime() -> None:
    before = signed_in()
    body = {"code": 200, "msg": "SUCCESS", "data": {"accessToken": "a2", "refreshToken": "r2", "idToken": "i2"}}
    after = parse_refresh(body, before, NOW + timedelta(seconds=10))
    assert (after.access_token, after.refresh_token, after.id_token) == ("a2", "r2", "i2")
    assert after.authentication_expires_in == before.authentication_expires_in


def test_refresh_never_adopts_aws_fields() -> None:
    before = signed_in()
    data = {"accessToken": "a2", "accessKeyId": "ASIAOTHER00000000000", "secretKey": "s2", "sessionToken": "t2",
            "authorizationExpiresIn": 3600}
    after = parse_refresh({"code": 200, "msg": "", "data": data}, before, NOW + timedelta(minutes=20))
    assert after.aws_credentials() == before.aws_credentials()
    assert after.aws_issued_at == NOW


def _without_access_token(body: dict[str, Any]) -> dict[str, Any]:
    body["data"]["token"].pop("accessToken")
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({"msg": "SUCCESS"}, "'code'"),
        ({"code": True, "data": {}}, "'code'"),
        ({"code": 500, "msg": "oops", "data": None}, "code 500"),
        ({"code": 200, "msg": "SUCCESS", "data": None}, "'data'"),
        ({"code": 200, "msg": "SUCCESS", "data": {"userInfo": {}}}, "'data.token'"),
        (_without_access_token(sign_in_body()), "'accessToken'"),
        (sign_in_body(accessKeyId=""), "'accessKeyId'"),
        (sign_in_body(sessionToken=12), "'sessionToken'"),
        (sign_in_body(authenticationExpiresIn=None), "'authenticationExpiresIn'"),
        (sign_in_body(authenticationExpiresIn=-5), "'authenticationExpiresIn'"),
        (sign_in_body(authenticationExpiresIn="3600"), "'authenticationExpiresIn'"),
        (sign_in_body(authorizationExpiresIn=True), "'authorizationExpiresIn'"),
        (sign_in_body(authorizationExpiresIn=1.5), "'authorizationExpiresIn'"),
    ],
)
def test_malformed_sign_in(body: object, reason: str) -> None:
    with pytest.raises(MalformedResponse, match=reason) as caught:
        parse_sign_in(body, NOW)
    assert isinstance(caught.value, ValueError)
    assert not any(secret in str(caught.value) for secret in SECRETS)


def test_integral_float_lifetime_is_accepted() -> None:
    assert parse_sign_in(sign_in_body(authenticationExpiresIn=3600.0), NOW).authentication_expires_in == 3600


@pytest.mark.parametrize(
    "data",
    [None, [], {}, {"accessToken": ""}, {"accessToken": 5}, {"accessToken": "a", "authenticationExpiresIn": 0}],
)
def test_malformed_refresh(data: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_refresh({"code": 200, "msg": "SUCCESS", "data": data}, signed_in(), NOW)


def test_envelope_keeps_code_and_message() -> None:
    envelope = parse_envelope({"code": 401, "msg": "Invalid password", "data": None})
    assert (envelope.code, envelope.msg, envelope.ok) == (401, "Invalid password", False)
    assert parse_envelope({"code": 200}).msg == ""


def test_to_from_dict_round_trip() -> None:
    tokens = signed_in()
    refreshed = parse_refresh({"code": 200, "data": {"accessToken": "a2"}}, tokens, NOW + timedelta(minutes=7))
    for value in (tokens, refreshed, parse_sign_in(sign_in_body(authorizationExpiresIn=None), NOW)):
        data = value.to_dict()
        assert data["issued_at"].endswith("Z")
        assert set(data) >= {"id_token", "access_token", "refresh_token", "authentication_expires_in",
                              "access_key_id", "secret_key", "session_token", "authorization_expires_in",
                              "issued_at", "aws_issued_at", "user_seq"}
        assert Tokens.from_dict(data) == value


def test_from_dict_defaults_for_optional_keys() -> None:
    data = signed_in().to_dict()
    del data["aws_issued_at"], data["user_seq"]
    restored = Tokens.from_dict(data)
    assert restored.aws_issued_at == restored.issued_at
    assert restored.user_seq is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("access_token", None),
        ("secret_key", ""),
        ("refresh_token", 42),
        ("authentication_expires_in", "3600"),
        ("authentication_expires_in", 0),
        ("authorization_expires_in", -1),
        ("issued_at", "yesterday"),
        ("issued_at", None),
        ("aws_issued_at", 12),
        ("user_seq", "36283"),
    ],
)
def test_from_dict_names_the_bad_key(key: str, value: object) -> None:
    data = signed_in().to_dict()
    data[key] = value
    with pytest.raises(ValueError, match=repr(key)) as caught:
        Tokens.from_dict(data)
    assert not any(secret in str(caught.value) for secret in SECRETS)


def test_from_dict_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Tokens.from_dict(["not", "a", "dict"])


def test_repr_hides_secrets() -> None:
    tokens = signed_in()
    texts = [repr(tokens), str(tokens), repr(tokens.aws_credentials()), str(tokens.aws_credentials())]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    assert "jwt_expires_at=2026-11-21T13:00:00.123456Z" in repr(tokens)
    assert KEY_ID not in repr(tokens.aws_credentials())


def test_tokens_are_immutable() -> None:
    tokens = signed_in()
    with pytest.raises(AttributeError):
        tokens.access_token = "x"  # type: ignore[misc]


DEVICE_ITEM = {
    "deviceInfo": {"homeSeq": 25004, "macAddress": "04:78:63:32:FC:A0", "additionalValue": "5322",
                   "deviceType": 52, "deviceName": "NWP500", "connected": 2, "installType": "indoor"},
    "location": {"state": "CA", "city": "X", "address": "1 Main St", "latitude": 0.0, "longitude": 0.0},
}


def test_device_list() -> None:
    devices = parse_device_list({"code": 200, "msg": "SUCCESS", "data": [DEVICE_ITEM]})
    assert devices == [Device("04786332fca0", "5322", 52, "NWP500", 25004, 2)]
    assert devices[0].online is True
    assert "04786332" not in repr(devices[0])
    assert parse_device_list({"code": 200, "msg": "SUCCESS", "data": None}) == []
    assert parse_device_list({"code": 200, "msg": "SUCCESS", "data": []}) == []


def test_device_optional_fields() -> None:
    item = {"deviceInfo": {"macAddress": "04786332fca0", "additionalValue": 5322, "deviceType": 52}}
    (device,) = parse_device_list({"code": 200, "data": [item]})
    assert (device.additional_value, device.device_name, device.home_seq, device.connected) == ("5322", "", None, None)
    assert device.online is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(deviceInfo=None), "'deviceInfo'"),
        (lambda d: d["deviceInfo"].update(macAddress="0478"), "'macAddress'"),
        (lambda d: d["deviceInfo"].update(macAddress="zz786332fca0"), "'macAddress'"),
        (lambda d: d["deviceInfo"].pop("additionalValue"), "'additionalValue'"),
        (lambda d: d["deviceInfo"].update(deviceType="52"), "'deviceType'"),
    ],
)
def test_malformed_device(mutate: Any, reason: str) -> None:
    item = copy.deepcopy(DEVICE_ITEM)
    mutate(item)
    with pytest.raises(MalformedResponse, match=f"entry 1: {reason}"):
        parse_device_list({"code": 200, "data": [DEVICE_ITEM, item]})


@pytest.mark.parametrize("body", [{"code": 200, "data": {"devices": []}}, {"code": 200, "data": ["x"]},
                                  {"code": 401, "msg": "Unauthorized", "data": None}])
def test_malformed_device_list(body: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_device_list(body)
