"""The CLI's own promises: `--help` lists the KINVOKE_* variables a command reads (generated from
schemas/settings.py, so every setting needs a description), `--version`, `kinvoke dev` refusing
before it starts anything, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from kafka_core.file_lock import try_lock
from kinvoke import cli, dev
from kinvoke.settings_help import COMMAND_SETTINGS, env_name, package_version
from schemas.settings import Settings
from tests.conftest import free_port

COMMANDS = [c.split() for c in COMMAND_SETTINGS]


def test_every_setting_has_a_description_and_a_command_that_reads_it() -> None:
    fields = Settings.model_fields
    undescribed = [name for name, info in fields.items() if not info.description]
    assert not undescribed, f"add description= to these fields of schemas/settings.py: {undescribed}"
    listed = {name for names in COMMAND_SETTINGS.values() for name in names}
    assert listed <= set(fields), f"kinvoke/settings_help.py names unknown settings: {listed - set(fields)}"
    unread = set(fields) - listed
    assert not unread, f"say which commands read {unread} in kinvoke/settings_help.py COMMAND_SETTINGS"


def test_the_help_lists_every_subcommand() -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    topics = subparsers.choices["topics"]
    topic_commands = next(a for a in topics._actions if isinstance(a, argparse._SubParsersAction))
    found = {n for n in subparsers.choices if n != "topics"} | {f"topics {n}" for n in topic_commands.choices}
    assert found == set(COMMAND_SETTINGS)


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_lists_options_and_environment(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "options:" in out and "environment (KINVOKE_* variables this command reads):" in out
    for name in COMMAND_SETTINGS[" ".join(command)]:
        info = Settings.model_fields[name]
        assert env_name(name) in out
        assert (info.description or "")[:40] in " ".join(out.split())


def test_dev_help_names_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["dev", "--help"])
    out = capsys.readouterr().out
    assert "--broker {kafka,local}" in out and "--external-broker" in out
    assert (
        "KINVOKE_ADMIN_PORT (default: 9070)" in out
        and "KINVOKE_PROCESSOR_INSTANCE_ID (default: unset)" in out
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"kinvoke {package_version()}"
    from admin_api.app import API_VERSIONS, SERVER_VERSION
    from processor.invoker.attempt import SERVER_MAX_PROTOCOL_VERSION as HI
    from processor.invoker.attempt import SERVER_MIN_PROTOCOL_VERSION as LO

    assert out[1].startswith(f"Restate compatibility: server {SERVER_VERSION}, ")
    assert (
        f"admin API v{API_VERSIONS[0]}-v{API_VERSIONS[-1]}" in out[1]
        and f"service protocol v{LO}-v{HI}" in out[1]
    )


def _dev_settings(tmp_path: Path, **update: object) -> Settings:
    values: dict[str, object] = {
        "broker_data_dir": str(tmp_path / "kafka"),
        "broker_port": free_port(),
        "admin_port": free_port(),
        "ingress_port": free_port(),
        **update,
    }
    return Settings.model_validate(values)


def test_dev_refuses_while_another_holds_the_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _dev_settings(tmp_path)
    held = try_lock(tmp_path / "dev.lock")
    assert held is not None
    try:
        args = argparse.Namespace(broker=None, external_broker=False)
        assert dev.run_dev(settings, args) == 1
    finally:
        held.release()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("kinvoke dev: another kinvoke dev (pid ")
    assert str(tmp_path / "dev.lock") in err
    assert not (tmp_path / "kafka").exists()  # nothing was started


def test_dev_refuses_when_a_port_is_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = _dev_settings(tmp_path, ingress_port=port)
        args = argparse.Namespace(broker=None, external_broker=False)
        assert dev.run_dev(settings, args) == 1
    err = capsys.readouterr().err
    assert err == (
        f"kinvoke dev: port in use: ingress 127.0.0.1:{port} (KINVOKE_INGRESS_PORT); "
        "stop what uses them or choose others\n"
    )
    assert try_lock(tmp_path / "dev.lock") is not None  # released on the way out


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "tail", "commands"],
        ["replay"],
        ["replay", "--invocation", "inv_1abc"],
        ["topics", "create"],
    ],
)
def test_broker_down_is_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KINVOKE_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    # structlog stays as the other tests expect it (not printing to this test's captured stderr).
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"kinvoke {argv[0]}")
    assert "cannot reach Kafka" in captured.err or "bad invocation id 'inv_1abc'" in captured.err
