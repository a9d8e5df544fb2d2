"""Node configuration: TOML file, LEDGERD_* environment, flag overrides, strictness, clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from node.api.app import limits_from_config
from node.config import ConfigError, NodeConfig, load_config, render_config, save_config

PEER = "ab" * 32


def test_defaults_when_the_home_has_no_config_file(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    assert config.max_body_bytes == 1024 * 1024
    assert config.rest_port == 8001 and config.p2p_port == 9001
    assert config.path("data_dir") == tmp_path / "data"
    assert config.log_format == "plain"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('rest_port = 8100\ntick_ms = 20\nlog_format = "json"\n'
                                          f'[peers]\n"{PEER}" = "wss://10.0.0.1:9001/p2p"\n')
    config = load_config(tmp_path, environ={})
    assert (config.rest_port, config.tick_ms, config.log_format) == (8100, 20, "json")
    assert config.peers == {PEER: "wss://10.0.0.1:9001/p2p"}
    config = load_config(tmp_path, environ={"LEDGERD_REST_PORT": "8200", "LEDGERD_MEMPOOL_MAX_TXS": "7",
                                            "LEDGERD_EXTRAS": "test"})
    assert (config.rest_port, config.mempool_max_txs, config.tick_ms) == (8200, 7, 20)
    config = load_config(tmp_path, {"rest_port": 8300, "p2p_port": None},
                         environ={"LEDGERD_REST_PORT": "8200", "LEDGERD_PEERS": "{}"})
    assert config.rest_port == 8300 and config.p2p_port == 9001 and config.peers == {}


def test_absolute_paths_stay_absolute(tmp_path: Path) -> None:
    config = load_config(tmp_path, {"data_dir": "/var/lib/ledgerd"}, environ={})
    assert config.path("data_dir") == Path("/var/lib/ledgerd")


@pytest.mark.parametrize(("text", "env", "overrides", "message"), [
    ("rest_prot = 1\n", {}, {}, r"unknown setting 'rest_prot' \(from .*config.toml\)"),
    ("", {"LEDGERD_REST_PORT": "eighty"}, {}, r"rest_port: .* \(from LEDGERD_REST_PORT\)"),
    ("", {}, {"rest_port": 70000}, r"rest_port: .* \(from the command line\)"),
    ("", {}, {"bogus": 1}, r"unknown setting 'bogus'"),
    ('log_format = "xml"\n', {}, {}, r"log_format"),
    ("tick_ms = 0\n", {}, {}, r"tick_ms"),
    ('[peers]\nnode1 = "ws://x:1"\n', {}, {}, r"is not a node id"),
    (f'[peers]\n"{PEER}" = "tcp://x:1"\n', {}, {}, r"must be ws://host:port"),
    (f'[peers]\n"{PEER}" = "ws://x:1"\n', {}, {}, r"plain ws://; use wss:// \(or set p2p_allow_plaintext"),
    ("rest_port = \n", {}, {}, r"not valid TOML"),
    ('home = "/tmp"\n', {}, {}, r"'home' is not a setting"),
    ("", {"LEDGERD_PEERS": "not json"}, {}, r"LEDGERD_PEERS must be a JSON object"),
])
def test_bad_settings_are_one_clear_error(tmp_path: Path, text: str, env: dict[str, str],
                                          overrides: dict[str, object], message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path, overrides, environ=env)
    assert "\n" not in str(info.value)


def test_plain_ws_peers_need_the_explicit_setting(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[peers]\n"{PEER}" = "ws://x:1"\n')
    assert load_config(tmp_path, environ={"LEDGERD_P2P_ALLOW_PLAINTEXT": "true"}).peers == {PEER: "ws://x:1"}
    assert not load_config(tmp_path / ".." / tmp_path.name, {"peers": {}}, environ={}).p2p_allow_plaintext


def test_a_missing_home_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope", environ={})


def test_rendered_config_is_toml_that_loads_back_identically(tmp_path: Path) -> None:
    config = NodeConfig.model_validate({
        "home": tmp_path, "consensus": "raft", "rest_host": 'we"ird\\host', "peers": {PEER: "wss://h:1/p2p"},
        "mempool_tx_ttl_s": 12.5,
    })
    text = render_config(config)
    parsed = tomllib.loads(text)
    assert "home" not in parsed
    assert parsed["rest_host"] == 'we"ird\\host'
    save_config(config, tmp_path)
    assert load_config(tmp_path, environ={}) == config


def test_every_setting_is_written_with_a_description(tmp_path: Path) -> None:
    text = render_config(NodeConfig(home=tmp_path))
    for name, field in NodeConfig.model_fields.items():
        if name in ("home", "peers"):
            continue
        # A setting unset by default is written commented out, ready to fill in.
        assert (f"\n# {name} =" if field.default is None else f"\n{name} = ") in text
    assert text.count("# ") > 20


def test_the_explorer_setting_reaches_the_api_limits(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={}).explorer_enabled is True
    off = load_config(tmp_path, environ={"LEDGERD_EXPLORER_ENABLED": "false"})
    assert off.explorer_enabled is False and limits_from_config(off).explorer is False
    (tmp_path / "config.toml").write_text("explorer_enabled = false\n")
    assert load_config(tmp_path, environ={}).explorer_enabled is False
