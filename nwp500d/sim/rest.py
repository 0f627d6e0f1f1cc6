"""A NaviLink REST stand-in on loopback, so the client is tested over real HTTP instead of against mocks.

It answers with the cloud's envelope and token shapes and enforces the rules a client can get wrong: the
``authorization`` header must carry a currently valid access token (raw, no ``Bearer``), and only the most recently
issued refresh token is accepted, as with rotation. Faults are switched at runtime so one test can break the cloud
and then watch the client recover.

Nothing here is secret: tokens and keys are random strings shaped like the real ones, so that redaction patterns
and log checks see realistic values.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from nwp500d.clock import Clock, SystemClock
from nwp500d.sim.lifecycle import SimServer

API_PREFIX = "/api/v2.1"
MODES = frozenset({"ok", "http_500", "http_503", "timeout", "malformed_json", "malformed_envelope", "reject"})
DEFAULT_DEVICE: Mapping[str, Any] = {
    "deviceInfo": {
        "homeSeq": 25004,
        "macAddress": "02005e0f5001",  # locally administered: cannot collide with a real heater
        "additionalValue": "5322",
        "deviceType": 52,
        "deviceName": "NWP500",
        "connected": 2,
        "installType": "indoor",
    },
    "location": {"state": "", "city": "", "address": "", "latitude": 0.0, "longitude": 0.0, "altitude": 0.0},
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _envelope(code: int, msg: str, data: Any = None) -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": data}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fake_jwt(kind: str, now: datetime, lifetime: int) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"token_use": kind, "iat": int(now.timestamp()), "exp": int(now.timestamp()) + lifetime,
              "jti": secrets.token_hex(8)}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{_b64(secrets.token_bytes(32))}"


def _fake_access_key_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "ASIA" + "".join(secrets.choice(alphabet) for _ in range(16))


class FakeNaviLink(SimServer):
    """``await start()`` then point a client at ``base_url``. Counters count requests per endpoint, any outcome."""

    _noun = "fake NaviLink"

    def __init__(
        self,
        *,
        email: str = "owner@example.com",
        password: str = "correct-horse-battery-staple",
        jwt_lifetime_secs: int = 3600,
        aws_lifetime_secs: int | None = 3600,
        devices: Sequence[Mapping[str, Any]] | None = None,
        user_seq: int = 36283,
        rotate_refresh_tokens: bool = True,
        hold_secs: float = 60.0,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.email = email
        self.password = password
        self.jwt_lifetime_secs = jwt_lifetime_secs
        self.aws_lifetime_secs = aws_lifetime_secs  # None: sign-in omits authorizationExpiresIn
        self.devices = [dict(d) if "deviceInfo" in d else {"deviceInfo": dict(d)} for d in devices or [DEFAULT_DEVICE]]
        self.user_seq = user_seq
        self.rotate_refresh_tokens = rotate_refresh_tokens  # False: refresh answers omit refreshToken and idToken
        self.hold_secs = hold_secs
        self.refuse_access_tokens = False  # True: /device/list refuses every token, even a fresh one
        self.sign_ins = 0
        self.refreshes = 0
        self.device_lists = 0
        self.requests = 0
        self.base_url = ""
        self._clock: Clock = clock or SystemClock()
        self._host = host
        self._port = port
        self._mode = "ok"
        self._reject_password = False
        self._access_tokens: dict[str, datetime] = {}
        self._refresh_token: str | None = None
        self._issued: list[str] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ control

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, not {value!r}")
        if value == "timeout" and self._mode != "timeout":
            self._release = asyncio.Event()
        elif value != "timeout":
            self._release.set()  # let held requests go; their clients have given up by now
        self._mode = value

    def reject_password(self, on: bool = True) -> None:
        self._reject_password = on

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far stops working, as after a server-side expiry or logout."""
        self._access_tokens.clear()

    def revoke_refresh_token(self) -> None:
        self._refresh_token = None

    @property
    def issued_secrets(self) -> list[str]:
        """Every token and key handed out, for tests that check none of them leaks into logs or files."""
        return list(self._issued)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[self._count_and_inject_faults])
        app.router.add_post(f"{API_PREFIX}/user/sign-in", self._sign_in)
        app.router.add_post(f"{API_PREFIX}/auth/refresh", self._refresh)
        app.router.add_post(f"{API_PREFIX}/device/list", self._device_list)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}{API_PREFIX}"

    async def stop(self) -> None:
        self._release.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _count_and_inject_faults(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        self.requests += 1
        endpoint = request.path.removeprefix(API_PREFIX)
        if endpoint == "/user/sign-in":
            self.sign_ins += 1
        elif endpoint == "/auth/refresh":
            self.refreshes += 1
        elif endpoint == "/device/list":
            self.device_lists += 1
        mode = self._mode
        if mode == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.hold_secs)
            return web.json_response(_envelope(503, "held too long"), status=503)
        if mode in ("http_500", "http_503"):
            return web.Response(status=int(mode[5:]), text="<html><body>upstream error</body></html>",
                                content_type="text/html")
        if mode == "malformed_json":
            return web.Response(text='{"code": 200, "msg": "SUCCESS", "data": {"tok', content_type="application/json")
        if mode == "malformed_envelope":
            return web.json_response({"status": "ok", "result": []})
        if mode == "reject":
            return web.json_response(_envelope(401, "Unauthorized"), status=401)
        return await handler(request)

    async def _body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def _sign_in(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return web.json_response(_envelope(400, "Bad request"), status=400)
        if self._reject_password or body.get("userId") != self.email or body.get("password") != self.password:
            return web.json_response(_envelope(401, "Invalid userId or password"))
        token = self._issue_jwts(refresh=True, id_token=True)
        token.update(accessKeyId=self._keep(_fake_access_key_id()),
                     secretKey=self._keep(_b64(secrets.token_bytes(30))),
                     sessionToken=self._keep(_b64(secrets.token_bytes(240))))
        if self.aws_lifetime_secs is not None:
            token["authorizationExpiresIn"] = self.aws_lifetime_secs
        user = {"userType": "O", "userFirstName": "Sim", "userLastName": "User", "userStatus": "NORMAL",
                "userSeq": self.user_seq}
        return web.json_response(_envelope(200, "SUCCESS", {"userInfo": user, "token": token, "legal": []}))

    async def _refresh(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        offered = body.get("refreshToken") if body else None
        if not isinstance(offered, str) or offered != self._refresh_token:
            return web.json_response(_envelope(401, "Invalid refresh token"))
        rotate = self.rotate_refresh_tokens
        return web.json_response(_envelope(200, "SUCCESS", self._issue_jwts(refresh=rotate, id_token=rotate)))

    async def _device_list(self, request: web.Request) -> web.Response:
        expires = self._access_tokens.get(request.headers.get("authorization", ""))
        if expires is None or self._clock.wall() >= expires or self.refuse_access_tokens:
            return web.json_response(_envelope(401, "Unauthorized"))
        body = await self._body(request)
        if body is None or body.get("userId") != self.email:
            return web.json_response(_envelope(400, "userId does not match the token"))
        offset, count = body.get("offset", 0), body.get("count", 20)
        if not isinstance(offset, int) or not isinstance(count, int) or not 0 < count <= 20:
            return web.json_response(_envelope(400, "offset/count out of range"))
        return web.json_response(_envelope(200, "SUCCESS", self.devices[offset:offset + count]))

    def _issue_jwts(self, *, refresh: bool, id_token: bool) -> dict[str, Any]:
        now = self._clock.wall()
        lifetime = self.jwt_lifetime_secs
        self._access_tokens = {t: e for t, e in self._access_tokens.items() if e > now}
        access = self._keep(_fake_jwt("access", now, lifetime))
        self._access_tokens[access] = now + timedelta(seconds=lifetime)
        issued: dict[str, Any] = {"accessToken": access, "authenticationExpiresIn": lifetime}
        if id_token:
            issued["idToken"] = self._keep(_fake_jwt("id", now, lifetime))
        if refresh:
            self._refresh_token = issued["refreshToken"] = self._keep(_fake_jwt("refresh", now, 30 * 86400))
        return issued

    def _keep(self, secret: str) -> str:
        self._issued.append(secret)
        return secret
