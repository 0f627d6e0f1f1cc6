"""Config loading: every kind of mistake gets one line naming file, line, key path, value and what is allowed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from nwp500d import MqttConnectionConfig
from nwp500d.cli import main
from nwp500d.config import (
    Config,
    ConfigError,
    KeepAliveExperimentConfig,
    NetDiagConfig,
    load_config,
    parse_config,
    render_config,
)
from nwp500d.secrets import load_password

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc" / "nwp500d" / "nwp500d.yaml"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/nwp500d/nwp500d.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_example_config_loads_as_is_and_equals_the_defaults() -> None:
    assert load_config(EXAMPLE) == Config()


def test_example_config_mentions_every_option() -> None:
    def check(loaded: dict[str, Any], defaults: Any, path: str) -> None:
        assert set(loaded) == {f.name for f in dataclasses.fields(defaults)}, path
        for item in dataclasses.fields(defaults):
            value = getattr(defaults, item.name)
            if dataclasses.is_dataclass(value):
                check(loaded[item.name], value, f"{path}{item.name}.")

    check(yaml.safe_load(EXAMPLE.read_text()), Config(), "")


def test_keepalive_experiment_settings_are_checked_against_the_session_they_share() -> None:
    enabled = "netdiag:\n  keepalive_experiment:\n    enabled: true\n    min_secs: {}\n"
    assert error_of(enabled.format(10)).startswith(
        "/etc/nwp500d/nwp500d.yaml:4: netdiag.keepalive_experiment.min_secs: 10: must be longer than "
        "mqtt.ping_timeout_secs (10)")
    assert "AWS IoT refuses keep-alives below 30 s" in error_of(enabled.format(20))
    local = "mqtt:\n  endpoint: 127.0.0.1\n  transport: tcp\n  ping_timeout_secs: 1\n" + enabled.format(2)
    assert parse_config(local).netdiag.keepalive_experiment.min_secs == 2  # a local broker takes any keep-alive
    # Unused settings never make a configuration unusable.
    unused = parse_config("netdiag:\n  keepalive_experiment:\n    min_secs: 10\n")
    assert unused.netdiag.keepalive_experiment.min_secs == 10
    assert error_of("netdiag:\n  keepalive_experiment:\n    min_secs: 60\n    max_secs: 60\n").startswith(
        "/etc/nwp500d/nwp500d.yaml:4: netdiag.keepalive_experiment.max_secs: 60: must be above min_secs")
    assert "AWS IoT refuses keep-alives below 30 s" in error_of(
        "mqtt:\n  endpoint: X.IOT.US-EAST-1.AMAZONAWS.COM.\n" + enabled.format(20))
    long_id = "mqtt:\n  client_id: " + "c" * 122 + "\n" + enabled.format(30)
    assert error_of(long_id).startswith("/etc/nwp500d/nwp500d.yaml:2: mqtt.client_id: 'ccc")
    assert "too long for the experiment's trial ids (<client_id>-ka1200 must fit in 128 characters)" in \
        error_of(long_id)
    with pytest.raises(ValueError, match=r"netdiag\.keepalive_experiment\.min_secs: must be longer"):
        Config(netdiag=NetDiagConfig(keepalive_experiment=KeepAliveExperimentConfig(enabled=True, min_secs=5)))


def test_guide_defaults() -> None:
    mqtt = Config().mqtt
    assert mqtt.keep_alive_secs == 60
    assert mqtt.max_reconnect_attempts == -1
    assert mqtt.clean_session is False
    assert mqtt.effective_port == 443


def test_empty_file_gives_defaults() -> None:
    assert parse_config("") == Config()
    assert parse_config("# only a comment\n") == Config()


def test_out_of_range_names_file_line_key_value_and_range() -> None:
    message = error_of("mqtt:\n  region: us-east-1\n  keep_alive_secs: 5\n")
    assert message.startswith("/etc/nwp500d/nwp500d.yaml:3: mqtt.keep_alive_secs: 5:")
    assert "from 30 to 1200" in message


def test_upper_bound_and_special_value() -> None:
    assert "from 30 to 1200" in error_of("mqtt:\n  keep_alive_secs: 1201\n")
    assert parse_config("mqtt:\n  max_reconnect_attempts: -1\n").mqtt.max_reconnect_attempts == -1
    assert "(or -1)" in error_of("mqtt:\n  max_reconnect_attempts: -2\n")


def test_unknown_key_suggests_the_close_one() -> None:
    message = error_of("mqtt:\n  keepalive_secs: 60\n")
    assert message.startswith("/etc/nwp500d/nwp500d.yaml:2: mqtt.keepalive_secs: unknown key;")
    assert "did you mean mqtt.keep_alive_secs?" in message


def test_unknown_section() -> None:
    message = error_of("mqttt:\n  keep_alive_secs: 60\n")
    assert ":1: mqttt: unknown key; did you mean mqtt?" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('mqtt:\n  keep_alive_secs: "60"\n', "mqtt.keep_alive_secs: '60': expected an integer"),
        ("mqtt:\n  keep_alive_secs: 60.5\n", "mqtt.keep_alive_secs: 60.5: expected an integer"),
        ("mqtt:\n  clean_session: 1\n", "mqtt.clean_session: 1: expected true or false"),
        ("mqtt:\n  transport: websocket\n", "expected one of 'wss-sigv4', 'tls', 'tcp'"),
        ("mqtt:\n  ping_timeout_secs: .nan\n", "mqtt.ping_timeout_secs: nan: expected a number"),
        ("mqtt: [1, 2]\n", "mqtt: expected a mapping of keys, got a list"),
        ("mqtt:\n  endpoint: {a: 1}\n", "mqtt.endpoint: got a mapping; expected a string"),
        ("monitor:\n  devices: aa\n", "monitor.devices: 'aa': expected a list of strings"),
        ("- 1\n", "top level: expected a mapping of keys"),
    ],
)
def test_wrong_types(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_duplicate_key() -> None:
    assert "mqtt.port: given twice" in error_of("mqtt:\n  port: 1\n  port: 2\n")


def test_cross_field_checks_point_at_the_offending_line() -> None:
    message = error_of("mqtt:\n  keep_alive_secs: 30\n  ping_timeout_secs: 45\n")
    assert message.startswith("/etc/nwp500d/nwp500d.yaml:3: mqtt.ping_timeout_secs: 45.0: must be shorter")
    assert "max_reconnect_delay" in error_of("mqtt:\n  initial_reconnect_delay: 10\n  max_reconnect_delay: 5\n")
    assert "expected host:port" in error_of("metrics:\n  listen: localhost\n")
    assert "is not a MAC address" in error_of("monitor:\n  devices: [zz0011223344]\n")


def test_yaml_syntax_error_has_a_line() -> None:
    assert error_of("mqtt:\n  a: [\n").startswith("/etc/nwp500d/nwp500d.yaml:3: not valid YAML")


def test_ints_for_floats_become_floats() -> None:
    value = parse_config("mqtt:\n  max_reconnect_delay: 120\n").mqtt.max_reconnect_delay
    assert value == 120.0
    assert isinstance(value, float)


def test_python_construction_gets_the_same_checks() -> None:
    config = MqttConnectionConfig(keep_alive_secs=60, initial_reconnect_delay=0.5, max_reconnect_delay=60.0,
                                  deep_reconnect_threshold=5, max_reconnect_attempts=-1, enable_command_queue=True)
    assert config.keep_alive_secs == 60
    with pytest.raises(ValueError, match="keep_alive_secs: out of range"):
        MqttConnectionConfig(keep_alive_secs=1500)
    with pytest.raises(ValueError, match="ping_timeout_secs: must be shorter"):
        MqttConnectionConfig(keep_alive_secs=30, ping_timeout_secs=30)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "bad.yaml")


def test_state_directory_precedence() -> None:
    assert Config().state_directory({}) == Path("/var/lib/nwp500")
    assert Config().state_directory({"STATE_DIRECTORY": "/var/lib/nwp500/home"}) == Path("/var/lib/nwp500/home")
    explicit = parse_config("exports:\n  state_directory: /srv/nwp\n")
    assert explicit.state_directory({"STATE_DIRECTORY": "/x"}) == Path("/srv/nwp")


def test_render_hides_the_email() -> None:
    config = parse_config("account:\n  email: someone@example.com\n")
    assert "someone@example.com" not in render_config(config)
    assert parse_config(render_config(config, redact=False)) == config


# ------------------------------------------------------------------------------------------------ secrets


def test_password_sources_in_order(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "navien-password").write_text("from-credential\n")
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\n")
    pw_file.chmod(0o600)
    config = parse_config(f"account:\n  password_file: {pw_file}\n")
    both = {"CREDENTIALS_DIRECTORY": str(creds), "NAVIEN_PASSWORD": "from-env"}
    secret = load_password(config, both)
    assert secret is not None
    assert (secret.value, secret.source) == ("from-credential", "systemd credential navien-password")
    assert "from-credential" not in repr(secret)
    assert "from-credential" not in str(secret)
    env_secret = load_password(config, {"NAVIEN_PASSWORD": "from-env"})
    assert env_secret is not None
    assert env_secret.value == "from-env"
    file_secret = load_password(config, {})
    assert file_secret is not None
    assert file_secret.value == "from-file"
    assert load_password(Config(), {}) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_password_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("secret-value\n")
    pw_file.chmod(mode)
    config = parse_config(f"account:\n  password_file: {pw_file}\n")
    with pytest.raises(ConfigError) as caught:
        load_password(config, {})
    message = str(caught.value)
    assert f"mode {mode:04o}" in message
    assert "chmod 600" in message
    assert "secret-value" not in message


def test_password_file_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(ConfigError, match="password file is empty"):
        load_password(parse_config(f"account:\n  password_file: {empty}\n"), {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_password(parse_config(f"account:\n  password_file: {tmp_path / 'nope'}\n"), {})


# ------------------------------------------------------------------------------------------------ CLI


def test_check_config_exit_codes_and_redaction(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("account:\n  email: owner@example.com\n")
    monkeypatch.setenv("NAVIEN_PASSWORD", "hunter2-very-secret")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "owner@example.com" not in out
    assert "hunter2-very-secret" not in out
    assert "from environment variable NAVIEN_PASSWORD" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  keep_alive_secs: 2000\n")
    assert main(["check-config", "--config", str(bad)]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"nwp500d: {bad}:2: mqtt.keep_alive_secs: 2000: out of range; expected an integer from 30 to "
                   "1200 (AWS IoT's keep-alive range)"]


def test_run_refuses_missing_account(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("mqtt:\n  keep_alive_secs: 60\n")
    monkeypatch.delenv("NAVIEN_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["run", "--config", str(config)]) == 78
    assert "account.email: not set" in capsys.readouterr().err


def test_unreadable_password_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("x-secret-x\n")
    pw_file.chmod(0o644)
    config = tmp_path / "c.yaml"
    config.write_text(f"account:\n  email: a@b.example\n  password_file: {pw_file}\n")
    monkeypatch.delenv("NAVIEN_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check-config", "--config", str(config)]) == 78
    err = capsys.readouterr().err
    assert "readable by group or others" in err
    assert "x-secret-x" not in err
