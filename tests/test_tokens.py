"""Personal access tokens: ``kamiwaza token create|list|revoke`` and ``login --token`` with one, against
a real local server with a user, through the SDK's auth service (the same calls as on a cluster)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import loopback
import pytest
from click.testing import CliRunner, Result
from conftest import LocalServer, start_with_user

USER, PASSWORD = "grace", "a long enough local password"


@pytest.fixture(scope="module")
def with_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = start_with_user(tmp_path_factory.mktemp("pats"), USER, PASSWORD)
    srv.env["KAMIWAZA_BASE_URL"] = srv.url
    yield srv
    srv.stop()


def cli(srv: LocalServer, *args: str, input: str | None = None) -> Result:
    from kamiwaza_cli.cli.main import cli as group

    return CliRunner().invoke(group, list(args), input=input, env=srv.env, catch_exceptions=False)


def _works(srv: LocalServer, token: str) -> bool:
    r = loopback.get(f"{srv.url}/models/", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def test_create_list_login_revoke(with_user: LocalServer) -> None:
    srv = with_user
    assert cli(srv, "login", "-u", USER, "--password-stdin", input=PASSWORD + "\n").exit_code == 0

    made = cli(srv, "token", "create", "--name", "ci", "--ttl", "2h")
    assert made.exit_code == 0, made.stderr
    token = made.stdout.strip()
    assert made.stdout == token + "\n"  # only the secret on stdout: TOKEN=$(kamiwaza token create)
    assert "shown only now" in made.stderr and token not in made.stderr
    assert _works(srv, token)

    listed = cli(srv, "token", "list", "--json")
    [row] = json.loads(listed.stdout)
    assert row["name"] == "ci" and row["owner"] == USER and row["status"] == "active"
    assert token not in listed.stdout + cli(srv, "token", "list").stdout  # never shown again

    # Secrets on disk: the server keeps no token, only owner-only metadata; the CLI's copy is 0600.
    pats = srv.home / "pats.json"
    assert stat.S_IMODE(pats.stat().st_mode) == 0o600 and token not in pats.read_text()
    # Minted as the SDK's own `pat create` does: a cluster refuses a PAT without the platform audience.
    [record] = json.loads(pats.read_text())
    assert (record["aud"], record["scope"]) == ("kamiwaza-platform", "openid")
    assert token not in (srv.home / "server.log").read_text()
    assert cli(srv, "logout").exit_code == 0
    r = cli(srv, "login", "--token", input=token + "\n")
    assert r.exit_code == 0, r.stderr
    assert cli(srv, "whoami").stdout.strip() == USER
    creds = srv.home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600

    revoked = cli(srv, "token", "revoke", row["jti"][:8])  # a unique prefix of its id
    assert revoked.exit_code == 0 and "Revoked token ci" in revoked.stderr
    assert not _works(srv, token)
    who = cli(srv, "whoami")
    assert who.exit_code == 5, who.stderr  # the stored token stopped working at once
    assert json.loads(cli_as_user(srv, "token", "list", "--json").stdout)[0]["status"] == "revoked"


def cli_as_user(srv: LocalServer, *args: str) -> Result:
    cli(srv, "logout")
    assert cli(srv, "login", "-u", USER, "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    return cli(srv, *args)


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (("token", "create", "--ttl", "10s"), 2, "between 1 minute and 365 days"),
        (("token", "create", "--ttl", "2 weeks"), 2, "like 90d"),
        (("token", "create", "--ttl", "400d"), 2, "between 1 minute and 365 days"),
        (("token", "revoke", "no-such-token"), 4, "no active token"),
    ],
)
def test_bad_input_is_one_line_with_the_next_step(
    with_user: LocalServer, args: tuple[str, ...], code: int, phrase: str
) -> None:
    cli_as_user(with_user, "whoami")
    before = (with_user.home / "pats.json").read_text() if (with_user.home / "pats.json").exists() else ""
    r = cli(with_user, *args)
    assert r.exit_code == code and phrase in r.stderr and r.stdout == ""
    after = (with_user.home / "pats.json").read_text() if (with_user.home / "pats.json").exists() else ""
    assert before == after  # nothing half-made


def test_a_token_of_a_changed_user_stops_working(tmp_path: Path) -> None:
    """A PAT is the user's: when the server's user changes, the old user's tokens stop working."""
    from kamiwaza_cli.server.auth import LocalAuth

    old = LocalAuth(tmp_path, username="ada", password="pw")
    made = old.create_pat("ada", "old", 3600, None, None)
    assert old.identify(f"Bearer {made['token']}") is not None
    assert LocalAuth(tmp_path, username="bob", password="pw").identify(f"Bearer {made['token']}") is None
    forged = made["token"][:-2] + ("AA" if not made["token"].endswith("AA") else "BB")
    assert old.identify(f"Bearer {forged}") is None
