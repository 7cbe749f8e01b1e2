"""The deployment files run commands that exist: every compose service's command parses with the real CLI."""

import re
from pathlib import Path

import pytest
import yaml

from eximtrack.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _expand(arg: str) -> str:
    """${VAR:-default} -> default; ${VAR:?msg} -> a placeholder."""
    return re.sub(r"\$\{[A-Z_]+(?::-([^}]*)|:\?[^}]*)?\}", lambda m: m.group(1) or "x", arg)


def compose():
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.mark.parametrize("service", ["stream", "sink", "ship"])
def test_compose_commands_parse(service):
    parser, failed = build_parser()
    assert failed == []
    command = [_expand(a) for a in compose()["services"][service]["command"]]
    args = parser.parse_args(command)
    assert args.command == service and callable(args.func)


def test_compose_has_no_secrets():
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert "PASSWORD: ${EXIMTRACK_CH_PASSWORD:?" in text
    assert not re.search(r"PASSWORD:\s*[\"']?[A-Za-z0-9]{4,}", text.replace("${EXIMTRACK_CH_PASSWORD", ""))


def test_systemd_unit_runs_the_shipper():
    unit = (DEPLOY / "systemd" / "eximtrack-ship.service").read_text()
    assert "eximtrack ship" in unit and "Restart=" in unit


def test_every_extension_module_registers_the_commands_the_cli_names_for_it():
    """A command's start imports the module EXTENSION_COMMANDS names for it, and only that one: each module
    registers exactly its listed commands, and no command is listed twice."""
    import argparse
    import importlib

    from eximtrack import cli

    listed = [c for cmds in cli.EXTENSION_COMMANDS.values() for c in cmds]
    assert len(listed) == len(set(listed)) and not set(listed) & set(cli.BUILTIN_COMMANDS)
    for module_name, commands in cli.EXTENSION_COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers(dest="command")
        importlib.import_module(module_name).register(sub)
        assert tuple(sub.choices) == commands, module_name


@pytest.mark.parametrize("service", ["stream", "sink", "ship", "stats", "serve", "plan"])
def test_a_command_start_imports_only_its_module(service):
    """`eximtrack <command>` parses with its own extension module only, so that a restarted shipper or
    worker does not import the store's client and pyarrow (a restart's start time), `eximtrack stats` or
    `serve` not faust and the Kafka clients, and the command is still there."""
    import subprocess
    import sys

    code = (
        "import sys; from eximtrack.cli import build_parser; "
        f"p, failed = build_parser(command={service!r}); assert not failed; "
        f"p.parse_args([{service!r}, '--help'])"
    )
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and f"usage: eximtrack {service}" in out.stdout, out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "matplotlib" not in imported
    assert ("starlette" in imported) is (service == "serve")  # the web app's
    assert ("faust" in imported) is (service == "stream")
    if service in ("stream", "ship"):
        assert "pyarrow" not in imported and "clickhouse_connect" not in imported
    if service not in ("stream", "ship", "sink"):
        assert "kafka" not in imported and "aiokafka" not in imported
