"""Where the NaviLink password comes from, and the guarantees around it.

Order: the systemd credential ``$CREDENTIALS_DIRECTORY/navien-password`` (LoadCredential=, never on disk in the
clear for other users), then ``$NAVIEN_PASSWORD``, then ``account.password_file``. A password file that group or
others can read is refused: a daemon that quietly accepts one teaches people to leave it that way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nwp500d.config import Config, ConfigError

CREDENTIAL_NAME = "navien-password"


@dataclass(frozen=True)
class Secret:
    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return "**REDACTED**"


def load_password(config: Config, env: Mapping[str, str] | None = None) -> Secret | None:
    """The password, or None when no source is configured. Raises ConfigError for a source that is unusable."""
    env = os.environ if env is None else env
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        candidate = Path(credentials) / CREDENTIAL_NAME
        if candidate.exists():
            return Secret(_read(candidate, check_mode=False), f"systemd credential {CREDENTIAL_NAME}")
    if env.get("NAVIEN_PASSWORD"):
        return Secret(env["NAVIEN_PASSWORD"], "environment variable NAVIEN_PASSWORD")
    if config.account.password_file:
        path = Path(config.account.password_file)
        return Secret(_read(path, check_mode=True), f"account.password_file {path}")
    return None


def _read(path: Path, *, check_mode: bool) -> str:
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if check_mode and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"{path}: password file is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
                    f"expected 0600 or 0400: run chmod 600 {path}"
                )
            raw = handle.read(64 * 1024)
    except FileNotFoundError:
        raise ConfigError(f"{path}: password file does not exist") from None
    except PermissionError:
        raise ConfigError(f"{path}: password file is not readable by this user (uid {os.getuid()})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: password file is a directory; expected a file holding the password") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: password file is not UTF-8 text") from None
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"{path}: password file is empty")
    return password
