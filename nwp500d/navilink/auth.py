"""The one NaviLink REST client of the daemon: keeps tokens valid and lists devices.

Design constraints, each from a failure someone already had:

* Refresh tokens rotate, so two renewals racing each other invalidate one another. Every sign-in and refresh runs
  under one lock and re-checks after acquiring it; ten callers that find the tokens stale cause one renewal.
* The MQTT signer reads the AWS credentials from a CRT thread. They live in one immutable object whose reference is
  replaced in a single assignment, so that thread never sees half an update and never waits for the event loop.
* Retrying is the session supervisor's job (it has the backoff and records every attempt). Apart from the single
  refresh-and-retry after a 401, each call here makes one attempt and raises a typed error.
* A restart should not cost a sign-in: tokens are cached (0600) and reused when they belong to the same account.
  The cache names the account by a hash, so the file alone does not reveal whose it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiohttp

from nwp500d import __version__
from nwp500d.clock import Clock, SystemClock, iso_utc
from nwp500d.config import NAVILINK_BASE_URL
from nwp500d.navilink.errors import CredentialsRejected, NaviLinkError, NaviLinkUnavailable
from nwp500d.navilink.tokens import (
    AwsCredentials,
    Device,
    Envelope,
    MalformedResponse,
    Tokens,
    parse_device_list,
    parse_envelope,
    parse_refresh,
    parse_sign_in,
)
from nwp500d.redact import Redactor
from nwp500d.store import PRIVATE_FILE_MODE, atomic_write, ensure_directory

SIGN_IN_PATH = "/user/sign-in"
REFRESH_PATH = "/auth/refresh"
DEVICE_LIST_PATH = "/device/list"
USER_AGENT = f"nwp500d/{__version__} (+NaviLink monitoring daemon)"
CACHE_FORMAT = 1
UNAUTHORIZED = 401

_log = logging.getLogger("nwp500d.navilink")
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Current:
    """Tokens and the credentials derived from them, swapped as one reference (see the module docstring)."""

    tokens: Tokens
    aws: AwsCredentials


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any
    is_json: bool


class _RefreshRejected(Exception):
    """The server refused the refresh token (rotated away, expired, revoked): a full sign-in is the way out."""


class NaviLinkClient:
    def __init__(
        self,
        base_url: str,
        email: str,
        password: str,
        *,
        cache_path: Path | None,
        refresh_margin_secs: float = 300.0,
        request_timeout_secs: float = 30.0,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._email = email
        self._password = password
        self._cache_path = cache_path
        self._margin = refresh_margin_secs
        self._request_timeout = request_timeout_secs
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_secs)
        self._clock: Clock = clock or SystemClock()
        self._session = session
        self._owns_session = session is None
        self._lock = asyncio.Lock()
        self._current: _Current | None = None
        self._sign_in_generation = 0
        self._attempts = 0  # renewals that ran to success or a NaviLinkError
        self._last_failure: NaviLinkError | None = None
        self._force_sign_in = False
        self._redactor = Redactor([email, password])
        self._account = _account_key(email)
        cached = self._load_cache()
        if cached is not None:
            self._install(cached)
            _log.info("reusing cached NaviLink tokens: %s", self._lifetimes(cached))

    def __repr__(self) -> str:
        return f"NaviLinkClient(base_url={self._base_url!r}, signed_in={self._current is not None})"

    async def __aenter__(self) -> NaviLinkClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client made it; an injected one belongs to the caller."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # ------------------------------------------------------------------ reads (any thread)

    @property
    def tokens(self) -> Tokens | None:
        current = self._current
        return current.tokens if current else None

    def aws_credentials(self) -> AwsCredentials | None:
        """The credentials to sign the next MQTT connection with; safe and non-blocking from any thread."""
        current = self._current
        return current.aws if current else None

    def credentials_age_seconds(self) -> float | None:
        current = self._current
        if current is None:
            return None
        return max(0.0, (self._clock.wall() - current.tokens.aws_issued_at).total_seconds())

    # ------------------------------------------------------------------ renewal

    async def ensure_valid(self) -> Tokens:
        """Tokens good for at least the margin: reused, refreshed, or from a new sign-in, whichever is needed."""
        current = self._current
        if current is not None and self._needed(current.tokens) is None:
            return current.tokens
        seen = self._attempts
        async with self._lock:
            self._share_failure(seen)
            current = self._current
            needed = self._needed(current.tokens if current else None)
            if current is not None and needed is None:
                return current.tokens  # another caller renewed while we waited for the lock
            return await self._attempt(self._refresh_locked if needed == "refresh" else self._sign_in_locked)

    async def sign_in(self) -> Tokens:
        """A full sign-in: the only way to get fresh AWS credentials."""
        generation, seen = self._sign_in_generation, self._attempts
        async with self._lock:
            self._share_failure(seen)
            current = self._current
            if current is not None and self._sign_in_generation != generation:
                return current.tokens  # a sign-in completed while we waited; a second would gain nothing
            return await self._attempt(self._sign_in_locked)

    async def refresh(self) -> Tokens:
        """New JWTs via ``/auth/refresh``; a full sign-in instead when there is nothing to refresh or it is refused."""
        before, seen = self._current, self._attempts
        async with self._lock:
            self._share_failure(seen)
            current = self._current
            if current is not None and current is not before:
                return current.tokens
            return await self._attempt(self._refresh_locked)

    async def _renew_after_401(self, rejected: Tokens) -> Tokens:
        seen = self._attempts
        async with self._lock:
            self._share_failure(seen)
            current = self._current
            if current is not None and current.tokens is not rejected and not self._force_sign_in:
                return current.tokens  # someone renewed since our request left; try theirs
            return await self._attempt(self._refresh_locked)

    async def _attempt(self, renew: Callable[[], Awaitable[Tokens]]) -> Tokens:
        """Run one renewal (lock held) and remember how it ended, for the callers queued behind it."""
        try:
            tokens = await renew()
        except NaviLinkError as exc:
            self._attempts += 1
            self._last_failure = exc
            raise
        self._attempts += 1
        self._last_failure = None
        return tokens

    def _share_failure(self, seen: int) -> None:
        """Callers that queued while an attempt was failing get its error instead of hammering the cloud at once.

        Pacing retries is the supervisor's job; ten waiters each retrying the moment the lock frees would defeat it.
        """
        if self._attempts != seen and self._last_failure is not None:
            raise self._last_failure

    def _needed(self, tokens: Tokens | None) -> Literal["sign_in", "refresh"] | None:
        if tokens is None or self._force_sign_in:
            return "sign_in"
        now = self._clock.wall()
        if tokens.aws_expired(now, self._margin):
            return "sign_in"
        if tokens.jwt_expired(now, self._margin):
            return "refresh"
        return None

    async def _sign_in_locked(self) -> Tokens:
        reply = await self._post(SIGN_IN_PATH, {"userId": self._email, "password": self._password})
        envelope = self._envelope(reply, "sign-in")
        if not envelope.ok:
            lowered = envelope.msg.lower()
            if envelope.code == UNAUTHORIZED or "invalid" in lowered or "unauthorized" in lowered:
                raise CredentialsRejected(self._server_said(envelope))
            raise self._failed(envelope, "sign-in")
        self._reject_http_error(reply, "sign-in")
        tokens = _parsed(lambda: parse_sign_in(reply.body, self._clock.wall()), "sign-in")
        self._sign_in_generation += 1
        self._force_sign_in = False
        self._install(tokens)
        self._save_cache(tokens)
        _log.info("signed in to NaviLink: %s", self._lifetimes(tokens))
        return tokens

    async def _refresh_locked(self) -> Tokens:
        current = self._current
        if current is None or self._force_sign_in:
            return await self._sign_in_locked()
        try:
            tokens = await self._refresh_request(current.tokens)
        except _RefreshRejected as exc:
            _log.info("NaviLink refused the refresh token (%s); signing in again", exc)
            return await self._sign_in_locked()
        self._install(tokens)
        self._save_cache(tokens)
        _log.info("refreshed NaviLink tokens: %s", self._lifetimes(tokens))
        return tokens

    async def _refresh_request(self, previous: Tokens) -> Tokens:
        reply = await self._post(REFRESH_PATH, {"refreshToken": previous.refresh_token})
        if reply.status in (401, 403):
            raise _RefreshRejected(f"HTTP {reply.status}")
        envelope = self._envelope(reply, "refresh")
        if not envelope.ok:
            if envelope.code >= 500:
                raise self._failed(envelope, "refresh")
            raise _RefreshRejected(f"code {envelope.code}")
        self._reject_http_error(reply, "refresh")
        return _parsed(lambda: parse_refresh(reply.body, previous, self._clock.wall()), "refresh")

    def _install(self, tokens: Tokens) -> None:
        previous = self._current
        aws = tokens.aws_credentials()
        if previous is not None and previous.aws == aws:
            aws = previous.aws  # unchanged credentials keep their identity, so a signer can tell nothing changed
        self._current = _Current(tokens, aws)

    def _lifetimes(self, tokens: Tokens) -> str:
        now = self._clock.wall()
        return (
            f"JWT valid for {_remaining(tokens.jwt_expires_at, now)}, "
            f"AWS credentials valid for {_remaining(tokens.aws_expires_at, now)}"
        )

    # ------------------------------------------------------------------ devices

    async def list_devices(self) -> list[Device]:
        tokens = await self.ensure_valid()
        payload = {"userId": self._email, "offset": 0, "count": 20}
        reply = await self._post(DEVICE_LIST_PATH, payload, access_token=tokens.access_token)
        if _unauthorized(reply):
            tokens = await self._renew_after_401(tokens)
            reply = await self._post(DEVICE_LIST_PATH, payload, access_token=tokens.access_token)
            if _unauthorized(reply):
                self._force_sign_in = True
                raise NaviLinkUnavailable(
                    "unauthorized", "NaviLink refused the access token even after a refresh; the next call signs in"
                )
        envelope = self._envelope(reply, "device list")
        if not envelope.ok:
            raise self._failed(envelope, "device list")
        self._reject_http_error(reply, "device list")
        return _parsed(lambda: parse_device_list(reply.body), "device list")

    # ------------------------------------------------------------------ HTTP

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # ThreadedResolver: the c-ares resolver fails in some containers where getaddrinfo works.
            connector = aiohttp.TCPConnector(resolver=aiohttp.ThreadedResolver())
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _post(self, path: str, payload: Mapping[str, Any], *, access_token: str | None = None) -> _Reply:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if access_token is not None:
            headers["authorization"] = access_token  # the raw token: NaviLink does not accept "Bearer "
        what = f"NaviLink POST {path}"
        try:
            async with self._http().post(
                self._base_url + path, data=json.dumps(payload).encode(), headers=headers, timeout=self._timeout
            ) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            raise NaviLinkUnavailable("timeout", f"{what}: no answer within {self._request_timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise NaviLinkUnavailable(_transport_reason(exc), f"{what}: {self._scrub(exc)}") from None
        if status >= 500:
            raise NaviLinkUnavailable(f"http_{status}", f"{what}: HTTP {status}")
        try:
            return _Reply(status, json.loads(raw), True)
        except (ValueError, RecursionError):  # malformed, too deep, or an absurdly long number
            return _Reply(status, None, False)

    def _envelope(self, reply: _Reply, what: str) -> Envelope:
        if not reply.is_json:
            if reply.status >= 400:
                raise NaviLinkUnavailable(f"http_{reply.status}", f"NaviLink {what}: HTTP {reply.status}")
            raise NaviLinkUnavailable("malformed_json", f"NaviLink {what}: the answer is not JSON")
        try:
            return parse_envelope(reply.body)
        except MalformedResponse as exc:
            raise NaviLinkUnavailable("malformed_response", f"NaviLink {what}: {exc}") from None

    @staticmethod
    def _reject_http_error(reply: _Reply, what: str) -> None:
        if reply.status >= 400:  # an error status around a success envelope: trust neither
            raise NaviLinkUnavailable(f"http_{reply.status}", f"NaviLink {what}: HTTP {reply.status}")

    def _failed(self, envelope: Envelope, what: str) -> NaviLinkUnavailable:
        said = self._server_said(envelope)
        return NaviLinkUnavailable(f"envelope_{envelope.code}", f"NaviLink {what} failed: {said}")

    def _server_said(self, envelope: Envelope) -> str:
        text = " ".join(envelope.msg.split())[:160]
        return f"code {envelope.code}" + (f" {self._redactor.text(text)!r}" if text else "")

    def _scrub(self, exc: BaseException) -> str:
        return self._redactor.text(f"{type(exc).__name__}: {exc}".replace("\n", " "))

    # ------------------------------------------------------------------ cache

    def _load_cache(self) -> Tokens | None:
        path = self._cache_path
        if path is None:
            return None
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.warning("cannot read the token cache %s (%s); signing in instead", path, exc.strerror)
            return None
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
                raise ValueError("not a token cache of this nwp500d version")
            if document.get("account") != self._account:
                _log.warning("ignoring the token cache %s: it belongs to another account; signing in instead", path)
                return None
            return Tokens.from_dict(document.get("tokens"))
        except (ValueError, RecursionError) as exc:
            _log.warning("ignoring the token cache %s: %s; signing in instead", path, type(exc).__name__
                         if isinstance(exc, RecursionError) else exc)
            return None

    def _save_cache(self, tokens: Tokens) -> None:
        path = self._cache_path
        if path is None:
            return
        document = {
            "format": CACHE_FORMAT,
            "account": self._account,
            "saved_at": iso_utc(self._clock.wall()),
            "tokens": tokens.to_dict(),
        }
        try:
            ensure_directory(path.parent)
            atomic_write(path, json.dumps(document, indent=1).encode(), PRIVATE_FILE_MODE)
        except OSError as exc:
            _log.warning("cannot write the token cache %s (%s); the next start will sign in again", path, exc.strerror)


def _parsed(parse: Callable[[], _T], what: str) -> _T:
    try:
        return parse()
    except MalformedResponse as exc:
        raise NaviLinkUnavailable("malformed_response", f"NaviLink {what}: {exc}") from None


def _account_key(email: str) -> str:
    # Addresses are case-insensitive in practice; the prefix keeps this hash from matching any other use of it.
    return hashlib.sha256(b"nwp500d token cache\0" + email.strip().lower().encode()).hexdigest()


def _unauthorized(reply: _Reply) -> bool:
    if reply.status == UNAUTHORIZED:
        return True
    return reply.is_json and isinstance(reply.body, Mapping) and reply.body.get("code") == UNAUTHORIZED


def _transport_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns_error"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls_error"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid_url"
    return "connection_error"


def _remaining(expires: datetime | None, now: datetime) -> str:
    if expires is None:
        return "an unlimited time"
    seconds = int((expires - now).total_seconds())
    return f"{seconds} s" if abs(seconds) < 120 else f"{round(seconds / 60)} min"


class NavienAuthClient(NaviLinkClient):
    """The guide's name and call shape, ``NavienAuthClient(email, password)``, for code written against it."""

    def __init__(
        self,
        email: str,
        password: str,
        *,
        base_url: str = NAVILINK_BASE_URL,
        cache_path: Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, email, password, cache_path=cache_path, **options)
