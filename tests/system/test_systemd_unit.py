"""nwp500d.service as a real unit under a real systemd PID 1 (root only).

What is checked: Type=notify readiness with a status line, sign-in with the LoadCredential= password, the
StateDirectory= owner and modes, the service identity with its systemd-journal group (and a journal read under the
same identity and sandbox), MESSAGE_IDs that the installed catalog explains, watchdog pings keeping it alive, a
watchdog abort with the faulthandler stack in the journal and an automatic restart, SIGHUP reload (good and bad
configuration), a clean stop, no restart after NaviLink rejects the password, and a template instance beside it.

How, and why this way: systemd 252 runs as PID 1 of new pid/mount/net/uts/ipc namespaces, chrooted into an overlay
of the host's root whose upper layer, /run, /tmp and /dev/shm are tmpfs in a private mount namespace, so nothing it
writes reaches the host. /sys and /proc/sys are read-only in there, and units that would act on the host's kernel,
clock, devices or network (sysctl, modules-load, binfmt, timesyncd, udev, pstore, networking) are masked: an
earlier harness that shared the host's /tmp let systemd-tmpfiles empty it. PID 1 and everything below it live in a
cgroup of their own, removed afterwards. install.sh stages the venv on the host (pip needs the network, which the
new net namespace lacks) and installs everything else with --root into the overlay, as on a real machine. The
NaviLink simulator (REST API, mosquitto over WebSocket+TLS, a simulated water heater) runs as a second unit in the
same namespaces, reachable on the namespace's own loopback. Tests drive systemctl and journalctl through nsenter;
teardown kills PID 1 by its host pid (it ignores SIGTERM, and killing unshare alone would orphan it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from nwp500d import exitcodes, logfields

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SYSTEMD = Path("/lib/systemd/systemd")
UNIT = "nwp500d.service"
INSTANCE = "nwp500d@home.service"
SIM_UNIT = "nwp500d-sim.service"
SIM_OUT = "/run/nwp500d-sim.out"
PROBE_UNIT = "nwp500d-journal-probe.service"
PROBE_OUT = "/run/nwp500d-journal-probe.out"
TARGET = "nwp500d-test.target"
STATE = "/var/lib/nwp500"
CONFIG = "/etc/nwp500d/nwp500d.yaml"
CREDENTIAL_SOURCE = "/etc/nwp500d/navien-password"
SIM_CA = "/etc/nwp500d/sim-ca.pem"
WATCHDOG_SECS = 3
RESTART_SECS = 1
CGROUP_PREFIX = "nwp500d-test-"
DESCRIPTION = "NWP500 NaviLink MQTT session monitor and drop diagnostics"

# Units that would change the host (kernel tunables and modules, binfmt, the clock, /dev nodes, pstore, NICs) or
# only slow the boot down waiting for hardware and networks that do not exist in here.
MASKED = (
    "systemd-sysctl.service", "systemd-modules-load.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "systemd-timesyncd.service", "systemd-networkd.service",
    "systemd-networkd-wait-online.service", "networking.service", "ifupdown-wait-online.service",
    "NetworkManager-wait-online.service", "systemd-udevd.service", "systemd-udev-trigger.service",
    "systemd-udev-settle.service", "systemd-hwdb-update.service", "systemd-pstore.service",
    "systemd-repart.service", "systemd-firstboot.service", "kmod-static-nodes.service",
    "systemd-tmpfiles-setup-dev.service", "systemd-random-seed.service", "systemd-remount-fs.service",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
)

# Accounting off: PID 1 would otherwise move its units into controller cgroups outside the one this test owns.
SYSTEM_CONF = """\
[Manager]
DefaultCPUAccounting=no
DefaultIOAccounting=no
DefaultBlockIOAccounting=no
DefaultMemoryAccounting=no
DefaultTasksAccounting=no
DefaultIPAccounting=no
DefaultTimeoutStopSec=10s
"""

# The host's kernel log stays out, and no rate limit hides the daemon's lines from the assertions.
JOURNALD_CONF = """\
[Journal]
Storage=volatile
ReadKMsg=no
RateLimitBurst=0
"""

# After= only makes the target reference the units under test, so a stopped one is not garbage-collected and its
# exit status can still be read with systemctl show.
TEST_TARGET = f"""\
[Unit]
Description=nwp500d system test
Wants=systemd-journald.socket systemd-journald.service systemd-tmpfiles-setup.service {SIM_UNIT}
After={UNIT} {INSTANCE}
"""

# The simulator writes its CA and mosquitto files below TMPDIR; /run keeps them out of the daemon's PrivateTmp=.
SIM_SERVICE = f"""\
[Unit]
Description=NaviLink simulator for the nwp500d system test
After=systemd-journald.socket systemd-tmpfiles-setup.service

[Service]
Environment=TMPDIR=/run/nwp500d-sim
RuntimeDirectory=nwp500d-sim
ExecStart=/opt/nwp500d/venv/bin/python -m nwp500d sim --state-dir /run/nwp500d-sim/state
StandardOutput=file:{SIM_OUT}
"""

DROP_IN = f"""\
[Service]
WatchdogSec={WATCHDOG_SECS}s
RestartSec={RESTART_SECS}s
"""

# Keys of the real unit that the journal probe must not copy: it is a one-shot journalctl, not the daemon.
NOT_FOR_PROBE = {
    "Type", "NotifyAccess", "ExecStart", "ExecReload", "SyslogIdentifier", "TimeoutStartSec", "TimeoutStopSec",
    "WatchdogSec", "Restart", "RestartSec", "RestartPreventExitStatus", "StateDirectory", "StateDirectoryMode",
    "ConfigurationDirectory", "ConfigurationDirectoryMode", "LoadCredential",
}

OUTER_SH = """\
set -euo pipefail
# Everything below this shell, PID 1 included, lands in cgroups this test created and removes afterwards.
for dir in "$@"; do echo $$ > "$dir/cgroup.procs"; done
# pdeathsig + --kill-child: if pytest dies, unshare dies, and PID 1 (with its whole pid namespace) follows.
exec setpriv --pdeathsig KILL unshare --pid --fork --kill-child --mount --net --uts --ipc --propagation private \\
    --mount-proc bash "$NWP_WORK/inner.sh"
"""

INNER_SH = """\
set -euo pipefail
ovl=$NWP_WORK/ovl
mount -t tmpfs -o mode=0755 nwp500d-test "$ovl"
mkdir "$ovl/upper" "$ovl/work" "$ovl/root"
mount -t overlay nwp500d-test -o "lowerdir=/,upperdir=$ovl/upper,workdir=$ovl/work" "$ovl/root"
R=$ovl/root
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
# PID 1 writes to the console whatever it cannot log to the journal: into a file here, not the host's console.
if [ -e "$R/dev/console" ]; then mount --bind "$NWP_WORK/console.log" "$R/dev/console"; fi
mount --rbind /sys "$R/sys"
mount -o remount,bind,ro "$R/sys"
if [ "$(findmnt -rn -o FSTYPE /sys/fs/cgroup)" = tmpfs ]; then
    # PID 1 remounts the /sys/fs/cgroup tmpfs read-only and adds directories to it: give it a tmpfs of its own
    # instead of the host's, holding the host's hierarchies.
    mount -t tmpfs -o mode=0755 nwp500d-cgroup "$R/sys/fs/cgroup"
    findmnt -rn -o TARGET -t cgroup,cgroup2 | { grep '^/sys/fs/cgroup/' || true; } | while read -r hierarchy; do
        mkdir "$R$hierarchy"
        mount --bind "$hierarchy" "$R$hierarchy"
    done
fi
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"

rm -rf "$R/etc/systemd/system/"*
: > "$R/etc/fstab"  # the host's file systems are not this machine's to mount
mkdir -p "$R/opt/nwp500d"
mount --bind "$NWP_WORK/stage/opt/nwp500d" "$R/opt/nwp500d"
mount -o remount,bind,ro "$R/opt/nwp500d"
bash "$NWP_REPO/packaging/install.sh" --root "$R" --skip-venv > "$NWP_WORK/install-root.log" 2>&1
cp -r "$NWP_WORK/units/." "$R/etc/systemd/system/"
for unit in $NWP_MASKED; do ln -sf /dev/null "$R/etc/systemd/system/$unit"; done
mkdir -p "$R/etc/systemd/system.conf.d" "$R/etc/systemd/journald.conf.d"
cp "$NWP_WORK/system.conf" "$R/etc/systemd/system.conf.d/nwp500d-test.conf"
cp "$NWP_WORK/journald.conf" "$R/etc/systemd/journald.conf.d/nwp500d-test.conf"
ip link set lo up

# Without it the ramfs that LoadCredential= mounts never shows up in the service's own mount namespace.
mount --make-rshared "$R"
export container=nwp500d-test
exec chroot "$R" /lib/systemd/systemd --system --unit=nwp500d-test.target --log-target=journal --show-status=no
"""

T = TypeVar("T")


def _missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root: namespaces, mounts and a systemd PID 1"
    for tool in ("unshare", "nsenter", "setpriv", "chroot", "mount", "ip", "journalctl", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is missing (Debian package systemd)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        return "mosquitto is not installed (the NaviLink simulator needs it)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (the NaviLink simulator needs it)"
    if not Path("/usr/bin/python3").exists():
        return "no /usr/bin/python3 for the installer's venv"
    if not _cgroup_parents():
        return "no cgroup hierarchy for systemd (neither name=systemd nor cgroup2 is mounted)"
    return None


# ---------------------------------------------------------------------------------------------- cgroups


def _cgroup_mounts() -> list[tuple[Path, str]]:
    """(mount point, kind) of every cgroup hierarchy: kind is 'name=systemd', a v1 controller list, or 'v2'."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = [*right.split(), "", "", ""][:3]
        point = Path(left.split()[4])
        if fstype == "cgroup2":
            mounts.append((point, "v2"))
        elif fstype == "cgroup":
            kind = next((o for o in options.split(",") if o.startswith("name=")), options)
            mounts.append((point, kind))
    return mounts


def _own_cgroup(kind: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (kind == "v2" and controllers == "") or (kind != "v2" and kind in controllers.split(",")):
            return path
    return "/"


def _cgroup_parents() -> list[Path]:
    """Where PID 1's own cgroup goes: below ours in the hierarchies systemd tracks processes with."""
    parents = []
    for point, kind in _cgroup_mounts():
        if kind in ("name=systemd", "v2"):
            parents.append(point / _own_cgroup(kind).lstrip("/"))
    return parents


def _remove_cgroup_trees(name_glob: str, deadline_secs: float) -> list[Path]:
    """rmdir every cgroup directory matching ``name_glob`` (deepest first) in every hierarchy; return leftovers.

    PID 1 created its slices in the controller hierarchies too, below the same relative path. rmdir only succeeds
    on an empty cgroup, so this can never disturb a concurrent run's live cgroups.
    """
    roots: set[Path] = set()
    for point, kind in _cgroup_mounts():
        for base in {point, point / _own_cgroup(kind).lstrip("/"), point / _own_cgroup("name=systemd").lstrip("/")}:
            if base.is_dir():
                roots.update(base.glob(name_glob))
    deadline = time.monotonic() + deadline_secs
    while True:
        left = []
        for top in roots:
            if not top.exists():
                continue
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            try:
                top.rmdir()
            except OSError:
                left.append(top)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------- the machine


@dataclass
class Machine:
    work: Path
    boot: subprocess.Popen[bytes]
    pid1: int
    ids: dict[str, int] = field(default_factory=dict)
    password: str = ""

    def path(self, inside: str) -> Path:
        """A path inside the booted root, reached through PID 1's root directory."""
        return Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")

    def run(self, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nsenter", f"--target={self.pid1}", "--mount", "--pid", "--root", "--wd", "--",
                                 *argv], capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "--property=" + ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", *args, timeout=60).stdout

    def since(self, started: float) -> str:
        return f"--since=@{int(started) - 1}"

    def diagnose(self, unit: str = UNIT) -> str:
        status = self.run("systemctl", "status", "--no-pager", "-l", "-n", "0", unit, check=False).stdout
        log = self.run("journalctl", "--no-pager", "-n", "80", "-o", "short-monotonic", check=False).stdout
        return f"--- systemctl status {unit}\n{status}\n--- journal (last 80)\n{log}"

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float, unit: str = UNIT) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {timeout:g} s\n{self.diagnose(unit)}")
            time.sleep(0.25)

    def wait_state(self, unit: str, wanted: str, timeout: float, *, bad: tuple[str, ...] = ()) -> dict[str, str]:
        def probe() -> dict[str, str] | None:
            props = self.show(unit, "ActiveState", "SubState", "Result", "StatusText", "MainPID", "NRestarts",
                              "ExecMainCode", "ExecMainStatus")
            if props.get("ActiveState") in bad:
                raise AssertionError(f"{unit} went {props['ActiveState']} while waiting for {wanted}: {props}\n"
                                     f"{self.diagnose(unit)}")
            return props if props.get("ActiveState") == wanted else None
        return self.wait_for(f"{unit} {wanted}", probe, timeout, unit)

    def write(self, inside: str, text: str, mode: int, uid: int = 0, gid: int = 0) -> None:
        target = self.path(inside)
        scratch = target.with_name(f".{target.name}.tmp")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chown(scratch, uid, gid)
        scratch.chmod(mode)
        scratch.replace(target)

    def system_state(self) -> str:
        """PID 1's overall state ("starting", "running", "degraded"), or "" while it does not answer yet."""
        state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
        return state if state in ("initializing", "starting", "running", "degraded", "maintenance") else ""

    def main_pid(self, unit: str = UNIT) -> int:
        return int(self.show(unit, "MainPID")["MainPID"])

    def proc_status(self, pid: int) -> dict[str, str]:
        text = self.path(f"/proc/{pid}/status").read_text()
        return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}

    def records(self, state: str = STATE) -> list[dict[str, Any]]:
        events = self.path(f"{state}/events")
        out: list[dict[str, Any]] = []
        if events.is_dir():
            for path in sorted(events.iterdir()):
                for line in path.read_text().splitlines():
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out


def _id_of(root: Path, database: str, name: str) -> int:
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"{name} is not in the booted root's /etc/{database}")


def _probe_unit() -> str:
    """journalctl with the daemon's identity and sandbox, so "the service can read the journal" is tested as such."""
    lines = ["[Unit]", "Description=nwp500d journal access probe", "", "[Service]", "Type=oneshot",
             f"ExecStart=/usr/bin/journalctl --no-pager -o cat -u {UNIT}", f"StandardOutput=file:{PROBE_OUT}"]
    section = ""
    for raw in (PACKAGING / "systemd/nwp500d.service").read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and line.split("=", 1)[0] not in NOT_FOR_PROBE:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _prepare(work: Path) -> None:
    stage = subprocess.run(["bash", str(PACKAGING / "install.sh"), "--root", str(work / "stage")],
                           capture_output=True, text=True, timeout=600, check=False)
    (work / "install-stage.log").write_text(stage.stdout + stage.stderr)
    if stage.returncode != 0:
        raise AssertionError(f"staging the venv with install.sh failed:\n{stage.stdout}\n{stage.stderr}")
    units = work / "units"
    (units / f"{UNIT}.d").mkdir(parents=True)
    (units / TARGET).write_text(TEST_TARGET)
    (units / SIM_UNIT).write_text(SIM_SERVICE)
    (units / PROBE_UNIT).write_text(_probe_unit())
    (units / f"{UNIT}.d" / "nwp500d-test.conf").write_text(DROP_IN)
    (work / "system.conf").write_text(SYSTEM_CONF)
    (work / "journald.conf").write_text(JOURNALD_CONF)
    (work / "outer.sh").write_text(OUTER_SH)
    (work / "inner.sh").write_text(INNER_SH)
    (work / "console.log").touch()
    (work / "ovl").mkdir()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _boot_failure(work: Path, why: str) -> AssertionError:
    logs = []
    for name in ("boot.log", "install-root.log", "console.log"):
        path = work / name
        if path.exists():
            logs.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
    return AssertionError(why + "\n" + "\n".join(logs))


def _wait_for_pid1(work: Path, boot: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if boot.poll() is not None:
            raise _boot_failure(work, f"the namespace setup exited with {boot.returncode}")
        for child in _children(boot.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/exe").readlink().name == "systemd":
                    return child
        time.sleep(0.1)
    raise _boot_failure(work, f"systemd did not start as PID 1 within {timeout:g} s")


def _configure(machine: Machine) -> None:
    """Point the daemon at the simulator: its printed config, with the state directory left to systemd."""
    output = machine.wait_for("the simulator up", lambda: _sim_output(machine), 90, SIM_UNIT)
    snippet = yaml.safe_load(output)
    password = re.search(r"^# password: NAVIEN_PASSWORD=(.+)$", output, flags=re.M)
    assert password, output
    machine.password = password.group(1).strip()
    root = machine.path("/")
    machine.ids = {"uid": _id_of(root, "passwd", "nwp500"), "gid": _id_of(root, "group", "nwp500"),
                   "journal": _id_of(root, "group", "systemd-journal")}
    # The simulator's CA sits in its private directory; the service may only read world-readable files under /etc.
    machine.write(SIM_CA, machine.path(snippet["mqtt"]["ca_file"]).read_text(), 0o644)
    snippet["mqtt"]["ca_file"] = SIM_CA
    snippet["exports"] = {"interval_secs": 10.0}
    snippet["monitor"] = {"status_interval_secs": 10.0}
    snippet["journal"] = {"enabled": True}
    snippet["logging"] = {"level": "info"}
    text = yaml.safe_dump(snippet, sort_keys=False)
    for config in (CONFIG, "/etc/nwp500d/home.yaml"):
        machine.write(config, text, 0o640, 0, machine.ids["gid"])
    for source in (CREDENTIAL_SOURCE, "/etc/nwp500d/home.password"):
        machine.write(source, machine.password + "\n", 0o600)
    machine.run("systemctl", "daemon-reload")


def _sim_output(machine: Machine) -> str | None:
    if machine.show(SIM_UNIT, "ActiveState")["ActiveState"] == "failed":
        raise AssertionError(f"the simulator failed\n{machine.diagnose(SIM_UNIT)}")
    with contextlib.suppress(OSError):
        text = machine.path(SIM_OUT).read_text()
        if "# password:" in text:
            return text
    return None


def _teardown(work: Path, boot: subprocess.Popen[bytes] | None, pid1: int | None, cgroup: str) -> None:
    problems = []
    if boot is not None:
        for pid in {*(p for p in [pid1] if p), *_children(boot.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            boot.wait(timeout=30)
        except subprocess.TimeoutExpired:
            boot.kill()
            boot.wait(timeout=10)
            problems.append("unshare did not exit after PID 1 was killed")
    left = _remove_cgroup_trees(cgroup, deadline_secs=15)
    if left:
        problems.append(f"cgroups left behind: {left}")
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(work) in line]
    if mounts:
        problems.append(f"mounts left behind: {mounts}")
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        raise AssertionError("; ".join(problems))


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    reason = _missing_requirements()
    if reason:
        pytest.skip(reason)
    _remove_cgroup_trees(f"{CGROUP_PREFIX}*", deadline_secs=0)  # empty leftovers of a killed run, never live ones
    work = Path(tempfile.mkdtemp(prefix="nwp500d-system-"))
    cgroup = f"{CGROUP_PREFIX}{os.urandom(4).hex()}"
    boot: subprocess.Popen[bytes] | None = None
    pid1: int | None = None
    try:
        _prepare(work)
        cgroup_dirs = [parent / cgroup for parent in _cgroup_parents()]
        for directory in cgroup_dirs:
            directory.mkdir()
        env = {**os.environ, "NWP_WORK": str(work), "NWP_REPO": str(REPO), "NWP_MASKED": " ".join(MASKED)}
        with (work / "boot.log").open("wb") as log:
            boot = subprocess.Popen(["bash", str(work / "outer.sh"), *map(str, cgroup_dirs)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        pid1 = _wait_for_pid1(work, boot, timeout=30)
        booted = Machine(work, boot, pid1)
        booted.wait_for("systemd answering", booted.system_state, 60)
        _configure(booted)
        booted.run("systemctl", "start", "--no-block", UNIT)
        yield booted
    finally:
        _teardown(work, boot, pid1, cgroup)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# ---------------------------------------------------------------------------------------------- tests


def test_becomes_ready_with_a_status_line(machine: Machine) -> None:
    props = machine.wait_state(UNIT, "active", 60, bad=("failed",))
    assert props["SubState"] == "running"
    assert props["StatusText"], "READY=1 came without a STATUS= line"
    assert props["NRestarts"] == "0"
    assert machine.show(UNIT, "Type")["Type"] == "notify"
    assert f"Started {UNIT} - {DESCRIPTION}." in machine.journal("-u", UNIT, "-o", "cat")


def test_signs_in_with_the_credential(machine: Machine) -> None:
    machine.wait_state(UNIT, "active", 60, bad=("failed",))
    pid = machine.main_pid()
    environ = dict(item.split("=", 1) for item in
                   machine.path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    assert environ.get("CREDENTIALS_DIRECTORY"), "LoadCredential= did not reach the daemon"
    assert "NAVIEN_PASSWORD" not in environ
    assert "password_file" not in machine.path(CONFIG).read_text(), "the credential must be the only source"
    # The token cache appears only after the fake NaviLink accepted the password the credential carried.
    machine.wait_for("signed in", lambda: machine.path(f"{STATE}/navilink-tokens.json").exists(), 30)
    machine.wait_for("a session recorded", lambda: any(r.get("kind") == "connection" for r in machine.records()), 30)


def test_state_directory_belongs_to_the_service_user(machine: Machine) -> None:
    machine.wait_state(UNIT, "active", 60, bad=("failed",))
    state = machine.path(STATE)
    info = state.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (machine.ids["uid"], machine.ids["gid"], 0o750)
    machine.wait_for("a snapshot written", (state / "exports/diagnostics-latest.json").exists, 30)
    for path in [state / "client-id", state / "navilink-tokens.json", *state.rglob("*")]:
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (machine.ids["uid"], machine.ids["gid"]), path
        mode = stat.S_IMODE(info.st_mode)
        assert not mode & 0o007, f"{path} is open to others: {mode:04o}"
    assert stat.S_IMODE((state / "navilink-tokens.json").stat().st_mode) == 0o600


def test_runs_as_nwp500_and_reads_the_journal_through_its_group(machine: Machine) -> None:
    machine.wait_state(UNIT, "active", 60, bad=("failed",))
    status = machine.proc_status(machine.main_pid())
    assert status["Uid"].split()[0] == str(machine.ids["uid"])
    assert str(machine.ids["journal"]) in status["Groups"].split()
    # The daemon's own journal reader is not written yet; journalctl under the same user, groups and sandbox
    # shows whether the unit gives it access.
    machine.run("systemctl", "start", PROBE_UNIT, timeout=60)
    seen = machine.path(PROBE_OUT).read_text()
    assert f"Started {UNIT} - {DESCRIPTION}." in seen, f"the service user could not read the journal:\n{seen}"


def test_journal_entries_carry_message_ids_the_catalog_explains(machine: Machine) -> None:
    machine.wait_state(UNIT, "active", 60, bad=("failed",))
    started = logfields.MESSAGE_IDS["started"]
    entries = [json.loads(line) for line in
               machine.journal("-u", UNIT, f"MESSAGE_ID={started}", "-o", "json").splitlines()]
    assert entries, "no journal entry with the 'started' MESSAGE_ID"
    assert entries[-1].get("SYSLOG_IDENTIFIER") == "nwp500d"
    assert entries[-1].get(logfields.EVENT) == "started"
    # journalctl -x reads the catalog database that install.sh --root compiled inside the booted root.
    config = yaml.safe_load(machine.path(CONFIG).read_text())
    endpoint = f"{config['mqtt']['endpoint']}:{config['mqtt']['port']}"
    for event, subject in (("started", "nwp500d started"), ("session_up", "NaviLink MQTT session is up")):
        explained = machine.journal("-x", "-u", UNIT, f"MESSAGE_ID={logfields.MESSAGE_IDS[event]}", "-n", "1")
        assert f"Subject: {subject}" in explained and "Defined-By: nwp500d" in explained, explained
        assert "NWP_" not in explained, f"a catalog field was not substituted:\n{explained}"
        if event == "started":
            assert endpoint in explained and STATE in explained, explained


def test_sandbox_exposure_of_the_running_unit(machine: Machine) -> None:
    result = machine.run("systemd-analyze", "security", UNIT, "--no-pager", check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 1.5


def test_watchdog_pings_keep_it_running(machine: Machine) -> None:
    machine.wait_state(UNIT, "active", 60, bad=("failed",))
    pid = machine.main_pid()
    started = time.time()
    time.sleep(WATCHDOG_SECS * 2.5)
    props = machine.show(UNIT, "ActiveState", "MainPID", "NRestarts")
    assert (props["ActiveState"], props["MainPID"], props["NRestarts"]) == ("active", str(pid), "0"), \
        f"{props}\n{machine.diagnose()}"
    assert "Watchdog timeout" not in machine.journal("-u", UNIT, machine.since(started), "-o", "cat")


def test_watchdog_aborts_a_hung_daemon_and_restarts_it(machine: Machine) -> None:
    before = machine.wait_state(UNIT, "active", 60, bad=("failed",))
    started = time.time()
    machine.run("systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", UNIT)

    def restarted() -> dict[str, str] | None:
        props = machine.show(UNIT, "ActiveState", "MainPID", "NRestarts")
        moved_on = props["MainPID"] not in ("0", before["MainPID"]) and int(props["NRestarts"]) >= 1
        return props if moved_on and props["ActiveState"] == "active" else None

    after = machine.wait_for("restarted after the watchdog fired", restarted, WATCHDOG_SECS + RESTART_SECS + 60)
    log = machine.journal("-u", UNIT, machine.since(started), "-o", "cat")
    assert f"Watchdog timeout (limit {WATCHDOG_SECS}s)!" in log, log
    assert "Failed with result 'watchdog'" in log, log
    assert "status=6/ABRT" in log, log
    # faulthandler: the stack of the wedged process, which points at where the loop was stuck.
    assert "Fatal Python error: Aborted" in log, log
    assert 'File "/opt/nwp500d/venv/' in log, log
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1


def test_reload_keeps_the_process_and_refuses_a_bad_file(machine: Machine) -> None:
    machine.wait_state(UNIT, "active", 60, bad=("failed",))
    pid = machine.main_pid()
    good = machine.path(CONFIG).read_text()
    started = time.time()
    machine.run("systemctl", "reload", UNIT)
    machine.wait_for("the reload logged", lambda: logfields.MESSAGE_IDS["reloaded"] in machine.journal(
        "-u", UNIT, machine.since(started), "-o", "export"), 15)
    assert machine.main_pid() == pid and machine.show(UNIT, "ActiveState")["ActiveState"] == "active"

    machine.write(CONFIG, good + "mqtt_typo: 1\n", 0o640, 0, machine.ids["gid"])
    try:
        started = time.time()
        machine.run("systemctl", "reload", UNIT)
        machine.wait_for("the refusal logged", lambda: logfields.MESSAGE_IDS["reload_rejected"] in machine.journal(
            "-u", UNIT, machine.since(started), "-o", "export"), 15)
        assert machine.main_pid() == pid and machine.show(UNIT, "ActiveState")["ActiveState"] == "active"
    finally:
        machine.write(CONFIG, good, 0o640, 0, machine.ids["gid"])


def test_stop_is_clean(machine: Machine) -> None:
    machine.wait_state(UNIT, "active", 60, bad=("failed",))
    started = time.time()
    machine.run("systemctl", "stop", UNIT, timeout=40)
    took = time.time() - started
    props = machine.show(UNIT, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"}, \
        f"{props}\n{machine.run('systemctl', 'show', UNIT).stdout}\n{machine.diagnose()}"
    log = machine.journal("-u", UNIT, machine.since(started), "-o", "cat")
    assert "Deactivated successfully" in log and "timed out" not in log, log
    assert took < 20, f"stop took {took:.1f} s (TimeoutStopSec=20s)"
    assert machine.records()[-1].get("kind") == "disconnect", "a clean stop should be recorded as such"


def test_template_instance_keeps_its_own_state(machine: Machine) -> None:
    machine.run("systemctl", "start", "--no-block", INSTANCE)
    try:
        props = machine.wait_state(INSTANCE, "active", 60, bad=("failed",))
        assert props["StatusText"]
        state = machine.path(f"{STATE}/home")
        info = state.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (machine.ids["uid"], 0o750)
        machine.wait_for("the instance's client id", (state / "client-id").exists, 30, INSTANCE)
        main_id = machine.path(f"{STATE}/client-id")
        if main_id.exists():
            assert (state / "client-id").read_text() != main_id.read_text(), "instances must not share a client id"
    finally:
        machine.run("systemctl", "stop", INSTANCE, timeout=40, check=False)
    assert machine.show(INSTANCE, "Result")["Result"] == "success"


def test_rejected_password_is_not_retried(machine: Machine) -> None:
    machine.run("systemctl", "stop", UNIT, timeout=40)
    machine.write(CREDENTIAL_SOURCE, "not-the-password\n", 0o600)
    # Cached tokens would spare the daemon a sign-in, and only a sign-in can be rejected.
    machine.path(f"{STATE}/navilink-tokens.json").unlink(missing_ok=True)
    try:
        started = time.time()
        machine.run("systemctl", "start", "--no-block", UNIT)
        props = machine.wait_state(UNIT, "failed", 60, bad=("active",))
        assert (props["Result"], props["ExecMainStatus"]) == ("exit-code", str(exitcodes.NOPERM)), props
        time.sleep(RESTART_SECS + 2)
        later = machine.show(UNIT, "ActiveState", "NRestarts")
        assert later == {"ActiveState": "failed", "NRestarts": "0"}, "RestartPreventExitStatus= should stop retries"
        assert logfields.MESSAGE_IDS["credentials_rejected"] in machine.journal(
            "-u", UNIT, machine.since(started), "-o", "export")
    finally:
        machine.write(CREDENTIAL_SOURCE, machine.password + "\n", 0o600)
        machine.run("systemctl", "reset-failed", UNIT, check=False)
