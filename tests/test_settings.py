"""Settings reach commands through config.py only: the environment, the config file, and --debug in
the click context (never written to the environment)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakeplatform import FakePlatform

from kamiwaza_cli import config, workflows
from kamiwaza_cli.cli.main import cli

SRC = Path(__file__).resolve().parent.parent / "src" / "kamiwaza_cli"
# Reading the environment; a write (``os.environ[NAME] = value``, handing a setting to the server
# process) is not a read.
ENV_READ = re.compile(r"os\.environ\.get|getenv|os\.environ\[[^\]]+\](?!\s*=[^=])|in os\.environ|environ\.copy")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KAMIWAZA_HOME", str(tmp_path))
    for setting in config.SETTINGS.values():
        if setting.key != "home":
            monkeypatch.delenv(setting.env, raising=False)
    return tmp_path


def test_the_cli_side_reads_no_environment_variable_itself() -> None:
    offenders = []
    for package in ("cli", "workflows", "chat", "platform"):
        for path in sorted((SRC / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if ENV_READ.search(line):
                    offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == [], "read settings through config.py:\n" + "\n".join(offenders)


def test_every_setting_is_documented_in_help() -> None:
    text = CliRunner().invoke(cli, ["--help"]).output
    for setting in config.SETTINGS.values():
        assert setting.env in text


def test_an_env_var_and_a_config_value_reach_the_platform_a_command_uses(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_file({"timeout": "33", "verify_ssl": "false"})
    platform, _ = workflows.connect("http://127.0.0.1:9/api")
    assert (platform.timeout, platform.verify, platform.debug) == (33.0, False, False)

    monkeypatch.setenv("KAMIWAZA_TIMEOUT", "7")  # the environment wins over the file
    monkeypatch.setenv("KAMIWAZA_DEBUG", "1")
    platform, _ = workflows.connect("http://127.0.0.1:9/api")
    assert (platform.timeout, platform.verify, platform.debug) == (7.0, False, True)


def test_env_only_settings_ignore_the_config_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_file({"local_api_key": "from-file", "use_https": "false", "no_history": "1", "no_color": "1"})
    assert config.local_api_key_raw() is None and config.env_raw("use_https") is None
    assert config.history_enabled() is False and config.no_color() is True  # these two may live in the file
    monkeypatch.setenv("KAMIWAZA_LOCAL_API_KEY", "")
    assert config.local_api_key_raw() == ""  # kept, so that a blank key is refused rather than ignored
    rows = {r["key"]: r for r in json.loads(CliRunner().invoke(cli, ["config", "show", "--json"]).output)}
    assert rows["use_https"]["value"] is None and rows["no_history"]["source"] == "file"


def test_debug_flag_travels_in_the_context_not_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def connect(url: str | None = None, **kwargs: Any) -> tuple[FakePlatform, None]:
        seen.update(kwargs)
        return FakePlatform(), None

    monkeypatch.setattr(workflows, "connect", connect)
    result = CliRunner().invoke(cli, ["--debug", "list"])
    assert result.exit_code == 0, result.output
    assert seen["debug"] is True
    assert "KAMIWAZA_DEBUG" not in os.environ

    seen.clear()
    assert CliRunner().invoke(cli, ["list"]).exit_code == 0
    assert seen["debug"] is False
