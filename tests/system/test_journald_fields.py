"""Root tier: the real daemon logging into a real journald, in a private mount namespace (the host's /run untouched).

journald runs without systemd as PID 1 (reference/systemd-journald.md §6): a tmpfs over /run and a volatile config
bound over journald.conf, inside ``unshare --mount``. The daemon's stderr is a journal stream (systemd-cat), with
JOURNAL_STREAM set the way systemd sets it for a service, so it logs natively with NWP_* fields and MESSAGE_IDs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nwp500d.logfields import MESSAGE_IDS
from nwp500d.sim.broker import find_mosquitto
from nwp500d.sim.demo import DEMO_EMAIL, DEMO_PASSWORD, simulator
from tests.notify import NotifySocket

pytestmark = pytest.mark.timeout(60)

JOURNALD = "/lib/systemd/systemd-journald"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace with its own journald)"
    for tool in ("unshare", "systemd-cat", "journalctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path(JOURNALD).exists():
        return "systemd-journald is not installed"
    try:
        find_mosquitto()
    except Exception:  # noqa: BLE001 - any reason means no simulator
        return "mosquitto is not installed"
    return None


if (_reason := _missing()) is not None:
    pytest.skip(_reason, allow_module_level=True)

INNER = textwrap.dedent(
    """\
    set -euo pipefail
    work="$1"; shift
    mount -t tmpfs tmpfs /run
    printf '[Journal]\\nStorage=volatile\\nReadKMsg=no\\nRateLimitBurst=0\\n' > /run/journald-test.conf
    mount --bind /run/journald-test.conf /etc/systemd/journald.conf
    env -u NOTIFY_SOCKET -u WATCHDOG_USEC /lib/systemd/systemd-journald & journald=$!  # it must not notify *our* socket
    trap 'kill "$journald" 2>/dev/null || true' EXIT
    for _ in $(seq 200); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.05; done
    [ -S /run/systemd/journal/stdout ] || { echo "journald did not come up" >&2; exit 1; }
    # systemd-cat execs the daemon in its own process with stderr on a journal stream; JOURNAL_STREAM names that
    # stream the way systemd does for a service (device:inode of stderr).
    systemd-cat -t nwp500d sh -c 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"' sh "$@" &
    daemon=$!
    echo "$daemon" > "$work/daemon.pid"
    rc=0
    wait "$daemon" || rc=$?
    journalctl -D /run/log/journal -o json --no-pager > "$work/journal.json"
    exit "$rc"
    """
)


async def test_daemon_logs_natively_with_fields_message_ids_and_no_secrets(
    notify_socket: NotifySocket
) -> None:
    work = Path(tempfile.mkdtemp(prefix="nwp-journald-", dir="/tmp"))
    try:
        async with simulator() as sim:
            config = work / "nwp500d.yaml"
            config.write_text(sim.config_yaml(work / "state"))
            env = {**os.environ, "NAVIEN_PASSWORD": DEMO_PASSWORD, "NOTIFY_SOCKET": notify_socket.path}
            log = work / "inner.log"
            with log.open("wb") as sink:
                process = await asyncio.create_subprocess_exec(
                    "unshare", "--mount", "--propagation", "private", "bash", "-c", INNER, "inner", str(work),
                    sys.executable, "-m", "nwp500d", "run", "--config", str(config),
                    env=env, stdout=sink, stderr=sink, start_new_session=True,
                )
            try:
                await asyncio.to_thread(notify_socket.wait_for, "READY=1", 30)
                await sim.proxy.reset_all()
                deadline = asyncio.get_running_loop().time() + 20
                while not any("1 drop/24h" in line and "=connected" in line
                              for line in notify_socket.lines()):
                    assert asyncio.get_running_loop().time() < deadline, notify_socket.lines()[-5:]
                    await asyncio.sleep(0.05)
                os.kill(int((work / "daemon.pid").read_text()), signal.SIGTERM)
                async with asyncio.timeout(30):
                    await process.wait()
            finally:
                if process.returncode is None:
                    os.killpg(process.pid, signal.SIGKILL)  # unshare, bash, journald and the daemon together
                    await process.wait()
            assert process.returncode == 0, log.read_text()
        entries = [json.loads(line) for line in (work / "journal.json").read_text().splitlines() if line]
        ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "nwp500d"]
        by_event: dict[str, dict[str, Any]] = {}
        for entry in ours:
            by_event.setdefault(entry.get("NWP_EVENT", ""), entry)
        for name in ("started", "session_up", "session_down", "session_back", "stopping"):
            assert name in by_event, sorted(by_event)
            assert by_event[name]["MESSAGE_ID"] == MESSAGE_IDS[name]
        down = by_event["session_down"]
        assert down["NWP_ERROR_NAME"] == "AWS_IO_SOCKET_CLOSED"
        assert down["PRIORITY"] == "4"
        assert float(down["NWP_SESSION_SECONDS"]) > 0
        assert float(by_event["session_back"]["NWP_DOWNTIME_SECONDS"]) > 0
        # One line down, one line back; no per-retry lines at INFO.
        assert sum(1 for e in ours if e.get("NWP_EVENT") == "session_down") == 1
        everything = (work / "journal.json").read_text()
        assert DEMO_PASSWORD not in everything
        assert DEMO_EMAIL not in everything
    finally:
        shutil.rmtree(work, ignore_errors=True)
