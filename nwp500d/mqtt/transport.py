"""The only module that imports awscrt: one disposable MQTT 3.1.1 connection, and the CRT-to-asyncio bridge.

Rules this module keeps, each learned the hard way (reference/awscrt-local.md):

* every CRT callback runs on a CRT thread and does nothing but ``loop.call_soon_threadsafe``; anything else there
  (blocking, touching asyncio objects, raising) loses events or the connection;
* every CRT future is awaited under a deadline (``_await_crt``, never ``asyncio.wrap_future``, which cancels it),
  because half-open sockets and stalled WebSocket upgrades never complete them;
* a connection that misbehaved is abandoned, never reused: a stuck one refuses ``connect()`` with
  ``AWS_ERROR_INVALID_STATE`` and its ``disconnect()`` never completes, while a brand-new one connects at once;
* the CRT's own reconnect is never relied on: failed automatic attempts are invisible, and a static credentials
  provider would re-sign them with stale credentials. On an interruption the connection is closed at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from awscrt import auth, io, mqtt

from nwp500d.config import MqttConnectionConfig
from nwp500d.errors import ErrorInfo, describe_error

_log = logging.getLogger("nwp500d.transport")

SIGV4_SERVICE = "iotdevicegateway"
TransportKind = Literal["wss-sigv4", "tls", "tcp"]


class SigningCredentials(Protocol):
    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...
    @property
    def session_token(self) -> str | None: ...


CredentialsReader = Callable[[], SigningCredentials | None]
"""Called on a CRT thread at every connect: must only read a cache that asyncio keeps fresh."""


@dataclass(frozen=True)
class TransportSettings:
    kind: TransportKind
    host: str
    port: int
    client_id: str
    region: str = "us-east-1"
    ca_file: str | None = None
    clean_session: bool = False
    keep_alive_secs: int = 60
    ping_timeout_ms: int = 10_000
    operation_timeout_ms: int = 30_000
    tcp_connect_timeout_ms: int = 10_000
    tcp_keepalive: bool = False
    tcp_keepalive_idle_secs: int = 60
    tcp_keepalive_interval_secs: int = 10
    tcp_keepalive_probes: int = 3


@dataclass(frozen=True)
class TransportEvent:
    """What a CRT callback reported, delivered on the event loop. ``connection_id`` tells stale connections apart."""

    kind: Literal["interrupted", "resumed", "closed", "message"]
    connection_id: int
    error: ErrorInfo | None = None
    session_present: bool = False
    return_code: int | None = None
    topic: str = ""
    payload: bytes = b""


class TransportError(Exception):
    """A connect/subscribe/publish that failed, with the CRT error normalised."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(f"{info.name}: {info.message}")
        self.info = info


@dataclass(frozen=True)
class ConnectResult:
    session_present: bool


_connection_ids = itertools.count(1)


class CrtFactory:
    """Owns the CRT event loop thread and TLS context shared by every connection of one daemon."""

    def __init__(self, settings: TransportSettings, credentials: CredentialsReader) -> None:
        self.settings = settings
        self._credentials = credentials
        self._event_loop_group = io.EventLoopGroup(1)  # one CRT thread, whatever the core count
        self._bootstrap = io.ClientBootstrap(self._event_loop_group, io.DefaultHostResolver(self._event_loop_group))
        self._tls: io.ClientTlsContext | None = None
        if settings.kind != "tcp":
            options = io.TlsContextOptions()
            if settings.ca_file:
                options.override_default_trust_store_from_path(None, settings.ca_file)
            if settings.kind == "wss-sigv4" and settings.port == 443:
                options.alpn_list = ["http/1.1"]
            self._tls = io.ClientTlsContext(options)
        # A closure over the reader, not a bound method: the native provider keeps it, and a reference back to this
        # factory would be a cycle through native code that keeps its event-loop thread alive forever.
        reader = credentials

        def read_credentials() -> auth.AwsCredentials:
            creds = reader()
            if creds is None:
                raise RuntimeError("no AWS credentials yet")
            return auth.AwsCredentials(creds.access_key_id, creds.secret_access_key, creds.session_token)

        self._provider = auth.AwsCredentialsProvider.new_delegate(read_credentials)

    @property
    def keep_alive_secs(self) -> int:
        return self.settings.keep_alive_secs

    def _sign(self, transform_args: Any, **_kwargs: Any) -> None:
        # CRT thread: start the signing and return; set_done must be called exactly once whatever happens.
        try:
            config = auth.AwsSigningConfig(
                algorithm=auth.AwsSigningAlgorithm.V4,
                signature_type=auth.AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS,
                credentials_provider=self._provider,
                region=self.settings.region,
                service=SIGV4_SERVICE,
                omit_session_token=True,
            )
            signing = auth.aws_sign_request(transform_args.http_request, config)
            signing.add_done_callback(lambda done: transform_args.set_done(done.exception()))
        except Exception as exc:  # noqa: BLE001 - must be handed back to the CRT, not raised on its thread
            transform_args.set_done(exc)

    def new_connection(
        self, loop: asyncio.AbstractEventLoop, on_event: Callable[[TransportEvent], None]
    ) -> CrtConnection:
        settings = self.settings
        connection_id = next(_connection_ids)

        def post(kind: str, **fields: Any) -> None:
            # An abandoned connection can report its close after the loop is gone (shutdown): nobody is listening.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, on_event, kind, connection_id, fields)

        socket_options = io.SocketOptions()
        socket_options.connect_timeout_ms = settings.tcp_connect_timeout_ms
        if settings.tcp_keepalive:
            socket_options.keep_alive = True
            # awscrt's docstring has these two backwards: "interval" sets TCP_KEEPIDLE, "timeout" TCP_KEEPINTVL.
            socket_options.keep_alive_interval_secs = settings.tcp_keepalive_idle_secs
            socket_options.keep_alive_timeout_secs = settings.tcp_keepalive_interval_secs
            socket_options.keep_alive_max_probes = settings.tcp_keepalive_probes
        websocket = settings.kind == "wss-sigv4"
        connection = mqtt.Connection(
            client=mqtt.Client(self._bootstrap, self._tls),
            host_name=settings.host,
            port=settings.port,
            client_id=settings.client_id,
            clean_session=settings.clean_session,
            keep_alive_secs=settings.keep_alive_secs,
            ping_timeout_ms=settings.ping_timeout_ms,
            protocol_operation_timeout_ms=settings.operation_timeout_ms,
            # We close on interruption and rebuild ourselves; these only bound what the CRT does meanwhile.
            reconnect_min_timeout_secs=1,
            reconnect_max_timeout_secs=60,
            socket_options=socket_options,
            use_websockets=websocket,
            websocket_handshake_transform=self._sign if websocket else None,
            disable_metrics=True,
            on_connection_interrupted=lambda connection, error, **kw: post("interrupted", error=error),
            on_connection_resumed=lambda connection, return_code, session_present, **kw: post(
                "resumed", return_code=return_code, session_present=session_present
            ),
            on_connection_closed=lambda connection, callback_data=None, **kw: post("closed"),
        )
        return CrtConnection(connection_id, connection, settings, post)


def settings_from_config(config: MqttConnectionConfig, client_id: str) -> TransportSettings:
    return TransportSettings(
        kind=config.transport,
        host=config.endpoint,
        port=config.effective_port,
        client_id=config.client_id or client_id,
        region=config.region,
        ca_file=config.ca_file,
        clean_session=config.clean_session,
        keep_alive_secs=config.keep_alive_secs,
        ping_timeout_ms=int(config.ping_timeout_secs * 1000),
        operation_timeout_ms=int(config.operation_timeout_secs * 1000),
        tcp_connect_timeout_ms=int(min(config.connect_timeout_secs, 30.0) * 1000),
        tcp_keepalive=config.tcp_keepalive,
        tcp_keepalive_idle_secs=config.tcp_keepalive_idle_secs,
        tcp_keepalive_interval_secs=config.tcp_keepalive_interval_secs,
        tcp_keepalive_probes=config.tcp_keepalive_probes,
    )


def _deliver(on_event: Callable[[TransportEvent], None], kind: Any, connection_id: int, fields: dict[str, Any]) -> None:
    """Runs on the event loop: normalise what the CRT thread handed over and pass it on."""
    error = fields.get("error")
    return_code = fields.get("return_code")
    event = TransportEvent(
        kind=kind,
        connection_id=connection_id,
        error=describe_error(error) if error is not None else None,
        session_present=bool(fields.get("session_present", False)),
        return_code=int(return_code) if return_code is not None else None,
        topic=fields.get("topic", ""),
        payload=fields.get("payload", b""),
    )
    try:
        on_event(event)
    except Exception:  # noqa: BLE001 - a consumer bug must not kill the loop's callback machinery
        _log.exception("transport event handler failed for %s", kind)


class CrtConnection:
    """One CRT connection. Never reconnected: when it goes bad it is closed or abandoned, and a new one built."""

    def __init__(
        self,
        connection_id: int,
        connection: mqtt.Connection,
        settings: TransportSettings,
        post: Callable[..., None],
    ) -> None:
        self.connection_id = connection_id
        self._connection = connection
        self._settings = settings
        self._post = post
        self._closed = False

    async def connect(self, timeout: float) -> ConnectResult:
        try:
            result = await _await_crt(self._call(self._connection.connect), timeout)
        except TimeoutError:
            raise TransportError(
                ErrorInfo("NWP500D_CONNECT_DEADLINE", None, f"no CONNACK within {timeout:g} s (stalled handshake)")
            ) from None
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 - AwsCrtError, or Exception(ConnectReturnCode.X) on a refused CONNACK
            raise TransportError(describe_error(exc)) from None
        return ConnectResult(session_present=bool(result.get("session_present", False)))

    async def subscribe(self, topic: str, timeout: float) -> None:
        post = self._post  # not ``self``: awscrt keeps this callback in native code, a cycle the GC cannot see

        def on_message(topic: str, payload: bytes, **_kwargs: Any) -> None:
            post("message", topic=topic, payload=bytes(payload))

        future, _packet_id = self._sync(lambda: self._connection.subscribe(topic, mqtt.QoS.AT_LEAST_ONCE, on_message))
        result = await self._bounded(future, timeout, f"SUBACK for {topic}")
        if result.get("qos") is None:
            raise TransportError(ErrorInfo("NWP500D_SUBSCRIBE_REJECTED", None, f"broker refused {topic}"))

    async def publish(self, topic: str, payload: bytes, timeout: float) -> None:
        future, _packet_id = self._sync(lambda: self._connection.publish(topic, payload, mqtt.QoS.AT_LEAST_ONCE))
        await self._bounded(future, timeout, f"PUBACK for {topic}")

    async def disconnect(self, timeout: float) -> bool:
        """A clean MQTT DISCONNECT (so the server logs a client-initiated close). False if it did not complete."""
        if self._closed:
            return True
        self._closed = True
        try:
            await _await_crt(self._call(self._connection.disconnect), timeout)
        except (TimeoutError, TransportError):
            return False
        return True

    def close_now(self) -> None:
        """Stop this connection from reconnecting on its own, without waiting for anything (safe when stuck)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            future = self._connection.disconnect()
            future.add_done_callback(_consume)

    def _call(self, method: Callable[[], concurrent.futures.Future[Any]]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = self._sync(method)
        future.add_done_callback(_consume)
        return future

    @staticmethod
    def _sync(method: Callable[[], Any]) -> Any:
        try:
            return method()
        except Exception as exc:  # noqa: BLE001 - RuntimeError("5131 (AWS_ERROR_MQTT_NOT_CONNECTED)") and friends
            raise TransportError(describe_error(exc)) from None

    @staticmethod
    async def _bounded(future: concurrent.futures.Future[Any], timeout: float, what: str) -> Any:
        future.add_done_callback(_consume)
        try:
            return await _await_crt(future, timeout)
        except TimeoutError:
            info = ErrorInfo("NWP500D_OPERATION_TIMEOUT", None, f"no {what} within {timeout:g} s")
            raise TransportError(info) from None
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 - every CRT failure shape becomes one TransportError
            raise TransportError(describe_error(exc)) from None


async def _await_crt(future: concurrent.futures.Future[Any], timeout: float) -> Any:
    """Await a CRT future under a deadline without ever cancelling it.

    ``asyncio.wrap_future`` cancels the CRT future when the wait is abandoned, and the CRT later fails setting a
    result on it (InvalidStateError on its own thread). Here the wait has its own future, fed from the CRT future's
    completion, and abandoning it leaves the CRT future alone.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def relay(done: concurrent.futures.Future[Any]) -> None:  # CRT thread
        with contextlib.suppress(RuntimeError):  # the loop may be gone by the time a stuck operation ends
            loop.call_soon_threadsafe(_settle, waiter, done)

    future.add_done_callback(relay)
    async with asyncio.timeout(timeout):
        return await waiter


def _settle(waiter: asyncio.Future[Any], done: concurrent.futures.Future[Any]) -> None:
    if waiter.done() or done.cancelled():
        return
    error = done.exception()
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())


def _consume(future: concurrent.futures.Future[Any]) -> None:
    """Retrieve an abandoned future's outcome so nothing logs "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


def init_crt_logging(level: str, destination: str = "stderr") -> None:
    """awscrt's own log is the only place per-attempt CRT errors appear; it can be initialised once per process."""
    if level == "off":
        return
    # Never Debug/Trace: awscrt then prints the signed WebSocket URL (SigV4 session token) unredacted.
    levels = {"fatal": io.LogLevel.Fatal, "error": io.LogLevel.Error, "warn": io.LogLevel.Warn,
              "info": io.LogLevel.Info}
    with contextlib.suppress(RuntimeError):
        io.init_logging(levels[level], destination)
