"""agentctl's reading of agentd.toml (agentd/cli/_console_config.py, standard library only) finds
the same file and the same values as the config models' `load_config`, with the same defaults and
paths made absolute the same way; a file it cannot use is a ConfigError naming the file and the
field, and agentctl exits 2 on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.cli._client import resolve_url
from agentd.cli._console_config import ConsoleConfig, read_console_config
from agentd.cli.agentctl import main
from agentd.config import LoadedConfig, find_config, load_config
from agentd.errors import ConfigError
from tests.harness import REPO


def _as_loaded(console: ConsoleConfig) -> dict[str, object]:
    return {
        "path": console.path,
        "url": console.url,
        "prefix": console.prefix,
        "tls_enabled": console.tls_enabled,
        "ca_file": console.ca_file,
        "host": console.embedded.host,
        "port": console.embedded.port,
        "state_dir": console.state_dir,
    }


def _from_models(loaded: LoadedConfig) -> dict[str, object]:
    bus = loaded.config.bus
    return {
        "path": loaded.path,
        "url": bus.url,
        "prefix": bus.prefix,
        "tls_enabled": bus.tls.enabled,
        "ca_file": bus.tls.ca_file,
        "host": bus.embedded.host,
        "port": bus.embedded.port,
        "state_dir": loaded.config.daemon.state_dir,
    }


CONFIGS = {
    "empty": "",
    "relative paths, TLS, prefix, port": """
[daemon]
state_dir = "var/state"
[bus]
prefix = "acme.prod"
[bus.tls]
cert_file = "tls/server.pem"
key_file = "tls/server.key"
ca_file = "../ca.pem"
[bus.embedded]
host = "::1"
port = 4333
""",
    "absolute state, external cluster": """
[daemon]
state_dir = "/srv/agentd"
[bus]
url = "nats://a:4222,nats://b:4222"
[bus.tls]
ca_file = "/etc/ssl/ca.pem"
""",
    "empty url means embedded": '[bus]\nurl = ""\n',
    "sections agentctl does not read": '[gateway]\nport = 9000\n[agents]\ndir = "a"\n',
}


@pytest.mark.parametrize("text", list(CONFIGS.values()), ids=list(CONFIGS))
def test_agentctl_reads_what_the_config_models_read(tmp_path: Path, text: str) -> None:
    path = tmp_path / "etc" / "agentd.toml"
    path.parent.mkdir()
    path.write_text(text)
    assert _as_loaded(read_console_config(path)) == _from_models(load_config(path))


def test_the_documented_config_reads_the_same(tmp_path: Path) -> None:
    path = REPO / "agentd.toml"
    assert _as_loaded(read_console_config(path)) == _from_models(load_config(path))


def test_the_file_is_found_as_load_config_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTD_CONFIG", raising=False)
    # no file: the defaults, relative to the working directory
    assert _as_loaded(read_console_config(None)) == _from_models(load_config(find_config(None)))
    (tmp_path / "agentd.toml").write_text('[daemon]\nstate_dir = "here"\n')
    assert read_console_config(None).state_dir == tmp_path / "here"
    assert _as_loaded(read_console_config(None)) == _from_models(load_config(find_config(None)))
    other = tmp_path / "other.toml"
    other.write_text('[bus]\nprefix = "env"\n')
    monkeypatch.setenv("AGENTD_CONFIG", str(other))
    assert read_console_config(None).prefix == "env"
    assert _as_loaded(read_console_config(None)) == _from_models(load_config(find_config(None)))


def test_the_url_comes_from_the_config_as_before(tmp_path: Path) -> None:
    path = tmp_path / "agentd.toml"
    path.write_text(
        '[bus.tls]\ncert_file = "c.pem"\nkey_file = "k.pem"\n[bus.embedded]\nport = 5\n'
    )
    assert resolve_url(None, str(path)) == ("tls://127.0.0.1:5", "agentd")
    path.write_text('[bus]\nurl = "nats://far:4222"\nprefix = "x"\n')
    assert resolve_url(None, str(path)) == ("nats://far:4222", "x")
    assert resolve_url("nats://flag:1", str(path)) == ("nats://flag:1", "x")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[bus]\nprefix = 3\n", "bus.prefix: must be a str"),
        ("[bus.embedded]\nport = '4222'\n", "bus.embedded.port: must be a int"),
        ("[bus.embedded]\nport = true\n", "bus.embedded.port: must be a int"),
        ("bus = 3\n", "bus: must be a table"),
        ("[daemon]\nstate_dir = []\n", "daemon.state_dir: must be a str"),
        ("[bus\n", "not valid TOML"),
    ],
)
def test_a_value_agentctl_cannot_use_names_the_file_and_the_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "agentd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_console_config(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_agentctl_exits_2_on_a_config_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing), "ps"]) == 2
    assert f"invalid configuration in {missing}" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    assert main(["ps", "--config", str(bad)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_a_mistake_in_a_section_agentctl_does_not_read_is_left_to_config_check(
    tmp_path: Path,
) -> None:
    """agentctl only finds the daemon; the daemon refuses such a file at start, and
    `agentd config check` names the field (tests/test_config.py)."""
    path = tmp_path / "agentd.toml"
    path.write_text('[daemon]\nlog_levle = "info"\nstate_dir = "s"\n[gateway]\nport = -1\n')
    with pytest.raises(ConfigError, match="daemon.log_levle"):
        load_config(path)
    assert read_console_config(path).state_dir == tmp_path / "s"
