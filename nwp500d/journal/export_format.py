"""Journal Export Format (``journalctl -o export``), parsed natively: what a user attaches to a bug report.

Each entry is a run of fields ended by a blank line. A field is ``NAME=value\\n`` for text, or, for values holding
newlines or binary data, ``NAME\\n`` followed by a little-endian 64-bit length, the raw bytes and ``\\n``. Values
come back as ``str`` when they are valid UTF-8 and ``bytes`` otherwise, like systemd-python's Reader.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

MAX_FIELD_BYTES = 64 * 1024 * 1024  # a longer binary field is corruption, not a log line
_NAME = re.compile(rb"[A-Z_][A-Z0-9_]*")


class ExportFormatError(ValueError):
    """The input is not Journal Export Format; the message says where (byte offset) and why."""


Entry = dict[str, str | bytes]


def _value(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def parse_export(data: bytes, source: str = "<export>") -> Iterator[Entry]:
    """Yield entries in file order. Invalid field names are skipped (as systemd does); broken framing raises."""
    position = 0
    size = len(data)
    entry: Entry = {}
    while position < size:
        newline = data.find(b"\n", position)
        if newline == -1:
            raise ExportFormatError(f"{source}: byte {position}: entry not ended by a blank line (truncated file?)")
        line = data[position:newline]
        if not line:
            if entry:
                yield entry
                entry = {}
            position = newline + 1
            continue
        equals = line.find(b"=")
        if equals != -1:
            name, raw = line[:equals], line[equals + 1:]
            position = newline + 1
        else:
            name = line
            header = newline + 1
            if header + 8 > size:
                raise ExportFormatError(f"{source}: byte {header}: binary field {name[:40]!r} has no length")
            (length,) = struct.unpack_from("<Q", data, header)
            if length > MAX_FIELD_BYTES or header + 8 + length + 1 > size:
                raise ExportFormatError(f"{source}: byte {header}: binary field {name[:40]!r} claims {length} bytes")
            raw = data[header + 8: header + 8 + length]
            if data[header + 8 + length: header + 9 + length] != b"\n":
                raise ExportFormatError(f"{source}: byte {header + 8 + length}: binary field not ended by a newline")
            position = header + 9 + length
        if _NAME.fullmatch(name):
            entry[name.decode("ascii")] = _value(raw)
    if entry:
        raise ExportFormatError(f"{source}: byte {size}: last entry not ended by a blank line (truncated file?)")


def format_export(entries: list[dict[str, str | bytes]]) -> bytes:
    """The inverse, for tests and fixtures: binary framing only where a value needs it."""
    out = bytearray()
    for entry in entries:
        for name, value in entry.items():
            raw = value.encode("utf-8") if isinstance(value, str) else value
            if b"\n" in raw or not isinstance(value, str):
                out += name.encode("ascii") + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
            else:
                out += name.encode("ascii") + b"=" + raw + b"\n"
        out += b"\n"
    return bytes(out)
