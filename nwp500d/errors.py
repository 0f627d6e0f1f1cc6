"""Turn any exception a connection can die with into one ``(name, code, message)`` triple.

awscrt reports the same failure in several shapes (``AwsCrtError`` with ``.name``/``.code``, a ``RuntimeError`` whose
text is ``"NNNN (NAME): msg"``, a plain ``Exception(ConnectReturnCode.X)`` for a refused CONNACK, a
``concurrent.futures.TimeoutError``, or even a builtin such as ``MemoryError``). Statistics are keyed on the name, so
every shape must map to a stable one. This module is duck-typed and never imports awscrt.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_CRT_TEXT = re.compile(r"^\s*(?P<code>\d+)\s*\((?P<name>[A-Z][A-Z0-9_]+)\)\s*:?\s*(?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    name: str | None
    code: int | None
    message: str | None


def describe_error(error: BaseException | None) -> ErrorInfo:
    if error is None:
        return ErrorInfo(None, None, None)
    name = getattr(error, "name", None)
    code = getattr(error, "code", None)
    if isinstance(name, str) and name:
        return ErrorInfo(name, code if isinstance(code, int) else None, _message(error))
    match = _CRT_TEXT.match(str(error))
    if match:
        text = match.group("message").strip()
        return ErrorInfo(match.group("name"), int(match.group("code")), text or match.group("name"))
    if len(error.args) == 1 and isinstance(error.args[0], enum.Enum):
        reason = error.args[0]
        value = reason.value if isinstance(reason.value, int) else None
        return ErrorInfo(f"CONNACK_{reason.name}", value, f"connection refused by broker: {reason.name}")
    if isinstance(error, TimeoutError):
        return ErrorInfo("TIMEOUT", None, _message(error) or "operation timed out")
    return ErrorInfo(type(error).__name__, None, _message(error))


def _message(error: BaseException) -> str:
    message = getattr(error, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(error) or type(error).__name__
