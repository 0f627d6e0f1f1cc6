"""packaging/: the units, catalog, man page and installer checked with the real systemd tools, without a systemd PID 1.

Everything runs on copies or below a temporary root: systemctl is replaced by a shim that fails the test if called,
and systemd-sysusers / journalctl by shims that record their arguments, so a slip that would touch the host's users
or catalog shows up as a failed assertion instead of a changed host. The same units are booted under a real systemd
in tests/system/test_systemd_unit.py.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nwp500d import exitcodes, logfields
from nwp500d.cli import build_parser
from nwp500d.config import DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIRECTORY
from nwp500d.secrets import CREDENTIAL_NAME

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
UNIT_SOURCES = {"nwp500d.service": PACKAGING / "systemd" / "nwp500d.service",
                "nwp500d@.service": PACKAGING / "systemd" / "nwp500d@.service"}
# What the tests load: the plain unit, and one instance of the template.
UNIT_UNDER_TEST = {"nwp500d.service": "nwp500d.service", "nwp500d@home.service": "nwp500d@.service"}
INTERPRETER = "/opt/nwp500d/venv/bin/python"
MAX_EXPOSURE = 1.5

VENV = "opt/nwp500d/venv"
INSTALLED = {
    "usr/local/lib/systemd/system/nwp500d.service": 0o644,
    "usr/local/lib/systemd/system/nwp500d@.service": 0o644,
    "usr/lib/sysusers.d/nwp500d.conf": 0o644,
    "usr/lib/systemd/catalog/nwp500d.catalog": 0o644,
    "usr/local/share/man/man8/nwp500d.8": 0o644,
    "etc/nwp500d/nwp500d.yaml": 0o640,
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package systemd); packaging checks need the real tool")
    return path


def _run(argv: list[str], *, timeout: float = 60, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env)


def _service_section(path: Path) -> configparser.SectionProxy:
    # strict=False: systemd allows a key to repeat (SystemCallFilter=); the last value is enough for these checks.
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser["Service"]


# ------------------------------------------------------------------------------------------------ units


@pytest.fixture
def stubbed_units(tmp_path: Path) -> Path:
    """Copies of both units whose ExecStart points at a stub: verify insists that the executable exists."""
    stub = tmp_path / "stub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name, source in UNIT_SOURCES.items():
        text = source.read_text()
        assert text.count(f"ExecStart={INTERPRETER} ") == 1, f"{name}: ExecStart no longer starts with {INTERPRETER}"
        (units / name).write_text(text.replace(f"ExecStart={INTERPRETER} ", f"ExecStart={stub} "))
    return units


@pytest.mark.parametrize("unit", UNIT_UNDER_TEST)
def test_unit_verifies_without_any_complaint(stubbed_units: Path, unit: str) -> None:
    # rc stays 0 on unknown keys and unparsable values, so any line on stderr is the failure signal.
    result = _run([_tool("systemd-analyze"), "verify", "--man=no", str(stubbed_units / unit)], cwd=stubbed_units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"systemd-analyze verify complained about {unit}:\n{result.stderr}"


@pytest.mark.parametrize("unit", UNIT_UNDER_TEST)
def test_unit_sandbox_exposure_stays_low(stubbed_units: Path, unit: str) -> None:
    result = _run([_tool("systemd-analyze"), "security", "--offline=true", "--threshold=15",
                   str(stubbed_units / unit)], cwd=stubbed_units)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert result.returncode == 0, f"exposure {found.group(1)} is above the threshold\n{result.stdout}"
    assert float(found.group(1)) <= MAX_EXPOSURE


@pytest.mark.parametrize("template", [False, True], ids=["unit", "template"])
def test_units_agree_with_the_daemon(template: bool) -> None:
    """The names the daemon looks for (credential, paths) are the ones the units provide."""
    service = _service_section(UNIT_SOURCES["nwp500d@.service" if template else "nwp500d.service"])
    config = "/etc/nwp500d/%i.yaml" if template else str(DEFAULT_CONFIG_PATH)
    state = f"{DEFAULT_STATE_DIRECTORY.name}/%i" if template else DEFAULT_STATE_DIRECTORY.name
    source = "/etc/nwp500d/%i.password" if template else f"/etc/nwp500d/{CREDENTIAL_NAME}"
    assert service["ExecStart"] == f"{INTERPRETER} -X faulthandler -m nwp500d run --config {config}"
    assert service["StateDirectory"] == state
    assert service["LoadCredential"] == f"{CREDENTIAL_NAME}:{source}"
    assert (service["Type"], service["NotifyAccess"], service["WatchdogSec"]) == ("notify", "main", "30s")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (service["User"], service["SupplementaryGroups"], service["UMask"]) == ("nwp500", "systemd-journal", "0027")
    assert "AF_NETLINK" in service["RestrictAddressFamilies"].split()
    assert set(service["RestartPreventExitStatus"].split()) == {
        str(exitcodes.USAGE), str(exitcodes.NOPERM), str(exitcodes.CONFIG)}


# ------------------------------------------------------------------------------------------------ catalog


def test_catalog_compiles_and_explains_every_message_id(tmp_path: Path) -> None:
    journalctl = _tool("journalctl")
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(PACKAGING / "catalog/nwp500d.catalog", catalog_dir)
    update = _run([journalctl, f"--root={tmp_path}", "--update-catalog"])
    assert update.returncode == 0 and "nwp500d.catalog" not in update.stderr, update.stderr
    listed = _run([journalctl, f"--root={tmp_path}", "--list-catalog"]).stdout
    listed_ids = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert listed_ids == set(logfields.MESSAGE_IDS.values())
    for event, message_id in logfields.MESSAGE_IDS.items():
        text = _run([journalctl, f"--root={tmp_path}", "--dump-catalog", message_id]).stdout
        assert "Defined-By: nwp500d" in text, event
        assert "Documentation: man:nwp500d(8)" in text, event
        body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        assert len(body.split()) >= 15, f"{event}: the catalog body should say what happened and what to check"


def _catalog_fields() -> dict[str, set[str]]:
    """MESSAGE_ID -> the @FIELD@ names its catalog entry substitutes."""
    entries = re.split(r"^-- ([0-9a-f]{32})\n", (PACKAGING / "catalog/nwp500d.catalog").read_text(), flags=re.M)
    return {entries[i]: set(re.findall(r"@([A-Za-z0-9_]+)@", entries[i + 1])) for i in range(1, len(entries), 2)}


def _emitted_fields() -> dict[str, set[str]]:
    """Event name -> the NWP_* fields that every ``logfields.event(name, ...)`` call in the daemon passes."""
    found: dict[str, set[str]] = {}
    for source in (REPO / "nwp500d").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "event" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "logfields" and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                continue
            fields = {k.arg for k in node.keywords if k.arg}
            name = node.args[0].value
            found[name] = found[name] & fields if name in found else fields
    return found


def test_catalog_substitutes_only_fields_each_event_carries() -> None:
    # A field missing from the entry is shown as its bare name by `journalctl -x` ("dropped: NWP_ERROR_NAME"), and
    # journald substitutes only [A-Z_] names, so both a typo and a field the daemon does not send stay visible.
    emitted = _emitted_fields()
    assert emitted, "found no logfields.event(...) calls in nwp500d/"
    for event, message_id in logfields.MESSAGE_IDS.items():
        used = _catalog_fields()[message_id]
        assert all(re.fullmatch(r"[A-Z_]+", name) for name in used), f"{event}: journald cannot substitute {used}"
        missing = used - emitted.get(event, set())
        assert not missing, f"{event}: the catalog shows {sorted(missing)}, which the daemon does not log with it"


# ------------------------------------------------------------------------------------------------ man page


def _subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("nwp500d's parser has no subcommands")


def _render_man_page() -> str:
    page = PACKAGING / "man/nwp500d.8"
    env = {**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8"}
    if shutil.which("groff"):
        result = _run(["groff", "-man", "-Tutf8", "-ww", str(page)], env=env)
    elif shutil.which("man"):
        result = _run(["man", "--warnings", "-l", str(page)], env={**env, "MANPAGER": "cat", "PAGER": "cat"})
    else:
        pytest.skip("neither groff nor man is installed (Debian packages groff-base, man-db)")
    assert result.returncode == 0 and result.stderr == "", f"the man page renders with warnings:\n{result.stderr}"
    # Strip the overstrike bold/underline that grotty emits, so words can be searched for.
    return re.sub(r".\x08", "", result.stdout)


def test_man_page_renders_and_covers_the_command_line() -> None:
    text = _render_man_page()
    sections = dict(re.findall(r"^([A-Z][A-Z ]+)\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, flags=re.M | re.S))
    for name in ("NAME", "SYNOPSIS", "COMMANDS", "FILES", "ENVIRONMENT", "SIGNALS", "EXIT STATUS", "SEE ALSO"):
        assert name in sections, f"section {name} missing; have {sorted(sections)}"
    for command in _subcommands():
        assert f"nwp500d {command}" in sections["SYNOPSIS"], command
    for code in (exitcodes.USAGE, exitcodes.NOINPUT, exitcodes.UNAVAILABLE, exitcodes.NOPERM, exitcodes.CONFIG):
        assert re.search(rf"^\s+{code}\s", sections["EXIT STATUS"], flags=re.M), code
    for signal_name in ("SIGTERM", "SIGHUP"):
        assert signal_name in sections["SIGNALS"]
    for variable in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NAVIEN_PASSWORD"):
        assert variable in sections["ENVIRONMENT"]
    assert str(DEFAULT_CONFIG_PATH) in sections["FILES"] and f"/etc/nwp500d/{CREDENTIAL_NAME}" in sections["FILES"]


# ------------------------------------------------------------------------------------------------ installer


def test_shell_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = _run(["shellcheck", str(PACKAGING / "install.sh"), str(PACKAGING / "uninstall.sh")])
    assert result.returncode == 0, result.stdout


_SEP = "\x1f"  # between logged arguments: no argument here contains it


@dataclass
class Shims:
    """PATH entries standing in for systemctl, systemd-sysusers and journalctl, with a log of every call."""

    bin: Path
    log: Path

    def calls(self, tool: str) -> list[list[str]]:
        if not self.log.exists():
            return []
        calls = [line.split(_SEP) for line in self.log.read_text().splitlines()]
        return [call[1:] for call in calls if call[0] == tool]

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}", **extra}


def _make_shims(where: Path) -> Shims:
    where.mkdir()
    log = where / "calls.log"
    shims = Shims(where / "bin", log)
    shims.bin.mkdir()
    for tool in ("systemctl", "systemd-sysusers", "journalctl"):
        real = shutil.which(tool)
        # systemctl must never run during a staged install; the others run for real, inside the temporary root.
        action = f'exec {real} "$@"' if real and tool != "systemctl" else "exit 1"
        script = shims.bin / tool
        script.write_text(
            "#!/bin/bash\n"
            f"{{ printf %s {tool}; printf '\\x1f%s' \"$@\"; printf '\\n'; }} >> {log}\n"
            f"{action}\n"
        )
        script.chmod(0o755)
    return shims


def _install(root: Path, shims: Shims, *extra: str, destdir: bool = False,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = ["bash", str(PACKAGING / "install.sh"), *extra]
    env = shims.env(DESTDIR=str(root)) if destdir else shims.env()
    if not destdir:
        argv += ["--root", str(root)]
    result = _run(argv, env=env, timeout=timeout)
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    return result


def _uninstall(root: Path, shims: Shims, *extra: str) -> subprocess.CompletedProcess[str]:
    result = _run(["bash", str(PACKAGING / "uninstall.sh"), "--root", str(root), *extra], env=shims.env())
    assert result.returncode == 0, f"uninstall.sh failed:\n{result.stdout}\n{result.stderr}"
    return result


def _group_id(root: Path, group: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return int(fields[2])
    raise AssertionError(f"group {group} not in {root}/etc/group")


@dataclass
class Installed:
    root: Path
    shims: Shims
    output: str


@pytest.fixture(scope="module")
def full_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """One complete install (venv included: about 10-15 s of pip) below a temporary root, through DESTDIR."""
    _tool("systemd-sysusers")
    _tool("journalctl")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3: the installer builds its venv from the distribution's Python")
    base = tmp_path_factory.mktemp("install")
    shims = _make_shims(base / "shims")
    root = base / "root"
    result = _install(root, shims, destdir=True)
    yield Installed(root, shims, result.stdout)
    shutil.rmtree(base, ignore_errors=True)  # a venv is large; do not leave it to pytest's retention


def test_install_puts_every_file_in_place(full_install: Installed) -> None:
    root = full_install.root
    for path, mode in INSTALLED.items():
        assert (root / path).is_file(), path
        assert stat.S_IMODE((root / path).stat().st_mode) == mode, path
    assert stat.S_IMODE((root / "etc/nwp500d").stat().st_mode) == 0o750
    for name in ("nwp500d.service", "nwp500d@.service"):
        assert (root / "usr/local/lib/systemd/system" / name).read_text() == UNIT_SOURCES[name].read_text()
    assert (root / "etc/nwp500d/nwp500d.yaml").read_text() == (REPO / "etc/nwp500d/nwp500d.yaml").read_text()
    assert (root / "usr/local/bin/nwp500d").readlink() == Path(f"/{VENV}/bin/nwp500d")
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert passwd["nwp500"][5:7] == [str(DEFAULT_STATE_DIRECTORY), "/usr/sbin/nologin"]
    journal_members = next(line for line in (root / "etc/group").read_text().splitlines()
                           if line.startswith("systemd-journal:")).split(":")[3].split(",")
    assert "nwp500" in journal_members
    if os.geteuid() == 0:
        for path in ("etc/nwp500d", "etc/nwp500d/nwp500d.yaml"):
            info = (root / path).stat()
            assert (info.st_uid, info.st_gid) == (0, _group_id(root, "nwp500")), path
    listed = _run([_tool("journalctl"), f"--root={root}", "--list-catalog"]).stdout
    assert logfields.MESSAGE_IDS["session_down"] in listed, "the installer compiles the catalog inside the root"
    assert "systemctl enable --now nwp500d" in full_install.output
    assert "/etc/nwp500d/navien-password" in full_install.output


def test_installed_program_runs_from_its_own_venv(full_install: Installed, tmp_path: Path) -> None:
    venv = full_install.root / VENV
    version = _run([str(venv / "bin/python"), "-m", "nwp500d", "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("nwp500d "), version.stderr
    # Not editable: the package lives in the venv, not in this checkout.
    where = _run([str(venv / "bin/python"), "-c", "import nwp500d; print(nwp500d.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    check = _run([str(venv / "bin/python"), "-m", "nwp500d", "check-config", "--config",
                  str(full_install.root / "etc/nwp500d/nwp500d.yaml")], cwd=tmp_path,
                 env={k: v for k, v in os.environ.items() if k not in ("NAVIEN_PASSWORD", "CREDENTIALS_DIRECTORY")})
    assert check.returncode == 0, check.stderr
    # The staging directory must not leak into what runs once the tree is at /.
    assert (venv / "bin/nwp500d").read_text().splitlines()[0] == f"#!/{VENV}/bin/python"
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            assert str(full_install.root).encode() not in path.read_bytes(), path
    base = _run([str(venv / "bin/python"), "-c", "import sys; print(sys.base_prefix)"]).stdout.strip()
    assert not base.startswith(("/root", "/home")), f"the venv's Python is hidden by ProtectHome=yes: {base}"


def test_install_leaves_the_host_alone(full_install: Installed) -> None:
    assert full_install.shims.calls("systemctl") == []
    for tool in ("systemd-sysusers", "journalctl"):
        calls = full_install.shims.calls(tool)
        assert calls, f"{tool} was not run for the staged root"
        assert all(f"--root={full_install.root}" in call for call in calls), calls


def test_reinstall_keeps_an_edited_config(tmp_path: Path) -> None:
    _tool("systemd-sysusers")
    shims = _make_shims(tmp_path / "shims")
    root = tmp_path / "root"
    _install(root, shims, "--skip-venv")
    config = root / "etc/nwp500d/nwp500d.yaml"
    config.write_text("account:\n  email: someone@example.invalid\n")
    unit = root / "usr/local/lib/systemd/system/nwp500d.service"
    unit.write_text("# stale\n")
    result = _install(root, shims, "--skip-venv")
    assert config.read_text() == "account:\n  email: someone@example.invalid\n"
    assert "kept the existing /etc/nwp500d/nwp500d.yaml" in result.stdout
    assert unit.read_text() == UNIT_SOURCES["nwp500d.service"].read_text(), "an upgrade refreshes the units"
    assert shims.calls("systemctl") == []


def test_uninstall_keeps_config_and_state_unless_purged(tmp_path: Path) -> None:
    _tool("systemd-sysusers")
    shims = _make_shims(tmp_path / "shims")
    root = tmp_path / "root"
    _install(root, shims, "--skip-venv")
    (root / VENV / "bin").mkdir(parents=True)  # what a full install would have made
    (root / "var/lib/nwp500/events").mkdir(parents=True)
    (root / "etc/nwp500d/navien-password").write_text("secret\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "nwp500d.service").symlink_to("/usr/local/lib/systemd/system/nwp500d.service")
    (wants / "nwp500d@home.service").symlink_to("/usr/local/lib/systemd/system/nwp500d@.service")
    (wants / "other.service").symlink_to("/usr/lib/systemd/system/other.service")

    _uninstall(root, shims)
    for path in [*INSTALLED, "usr/local/bin/nwp500d", "opt/nwp500d"]:
        if not path.startswith("etc/nwp500d/"):
            assert not (root / path).exists() and not (root / path).is_symlink(), path
    assert sorted(p.name for p in wants.iterdir()) == ["other.service"]
    assert (root / "etc/nwp500d/nwp500d.yaml").is_file() and (root / "etc/nwp500d/navien-password").is_file()
    assert (root / "var/lib/nwp500/events").is_dir()
    assert "nwp500" in (root / "etc/passwd").read_text(), "the system user stays"

    _uninstall(root, shims, "--purge")
    assert not (root / "etc/nwp500d").exists() and not (root / "var/lib/nwp500").exists()
    assert shims.calls("systemctl") == []


def test_installer_refuses_a_python_the_service_cannot_see(tmp_path: Path) -> None:
    fake = tmp_path / "home/someone/python3"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\ncase "$*" in *base_prefix*) echo /home/someone/.pyenv ;; esac\nexit 0\n')
    fake.chmod(0o755)
    shims = _make_shims(tmp_path / "shims")
    result = _run(["bash", str(PACKAGING / "install.sh"), "--root", str(tmp_path / "root"), "--python", str(fake)],
                  env=shims.env())
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert "ProtectHome" in result.stderr
    assert not (tmp_path / "root" / VENV).exists()


def test_make_targets_call_the_scripts() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    install = _run(["make", "-n", "-C", str(REPO), "install", "DESTDIR=/stage"]).stdout
    uninstall = _run(["make", "-n", "-C", str(REPO), "uninstall", "DESTDIR=/stage", "PURGE=1"]).stdout
    assert 'bash packaging/install.sh --root "/stage"' in install
    assert "bash packaging/uninstall.sh" in uninstall and '--root "/stage"' in uninstall and "--purge" in uninstall
