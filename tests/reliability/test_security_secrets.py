"""Secrets, file modes, password guessing and control characters, checked on real processes and files.

- the server's API key, given as a flag, a file, stdin or the environment, never shows in any
  process's argv (``ps``), and the server still requires it;
- an empty or blank key is refused in one line, before any server starts;
- the state directory is 0700 and every file in it 0600 after a session that wrote the catalog,
  a blob, logs, tokens, the config and the chat history; a looser one is tightened at start;
- the password grant answers 429 with ``Retry-After`` after 5 failures a minute from one address
  (a success resets it), every failure is logged without the password, and ``kamiwaza login``
  says so in one line;
- a model and file name full of control characters and rich markup reaches ``list``, ``show`` (in
  a pipe and on a terminal) and ``server.log`` as visible escapes, never as a forged line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import loopback
import pytest
from conftest import LocalServer, make_server
from ggufgen import write_tiny_gguf
from reliability.support import kamiwaza, one_error

KEY = "kw-secrets-key-4b1d9e7f0a2c"
USER, PASSWORD = "lovelace", "the analytical engine 1843"
WRONG = "the analytical engine 1842"  # a near miss: as secret as the real one
# A line the name tries to forge in server.log, and what each part of the name would do raw:
# recolour, return to column 0, ring, open a one-byte CSI, bold by rich markup, reverse the text.
FORGED = "2001-02-03 04:05:06,789 INFO forged line"
HOSTILE = f"trap\x1b[31m\r\x07\x9b[bold]loud[red]\u202e\n{FORGED}"
# Raw control characters that must never reach an output (newline aside, which ends lines).
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait_ping(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if loopback.get(f"{url}/ping", timeout=1).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no server answered at {url}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _argv_holding(secret: str) -> list[str]:
    """Every process whose argv (what `ps` shows anyone) contains ``secret``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(secret in arg for arg in cmd):
            found.append(f"{proc.info['pid']}: {' '.join(cmd)[:200]}")
    return found


def _modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of the directory and everything in it (links skipped)."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if not stat.S_ISLNK(st.st_mode):
            out[p.relative_to(root).as_posix() + ("/" if p.is_dir() else "")] = stat.S_IMODE(st.st_mode)
    return out


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One keyed server with a local user, started the default way; the CLI side holds no secret."""
    server = make_server(tmp_path_factory.mktemp("secrets"), None)
    server.env.update(KAMIWAZA_LOCAL_API_KEY=KEY, KAMIWAZA_LOCAL_USER=USER, KAMIWAZA_LOCAL_PASSWORD=PASSWORD)
    server.start()
    for name in ("KAMIWAZA_LOCAL_API_KEY", "KAMIWAZA_LOCAL_USER", "KAMIWAZA_LOCAL_PASSWORD"):
        server.env.pop(name)
    yield server
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)


# --- the key never in argv ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["foreground-flag", "file", "stdin", "env"])
def test_the_key_never_shows_in_argv_and_is_still_required(form: str, tmp_path: Path) -> None:
    key = f"kw-{form}-key-{os.urandom(6).hex()}"
    server = make_server(tmp_path / "home", None)
    start = ["server", "start", "--port", str(server.port)]
    env, stdin = dict(server.env), None
    foreground = None
    try:
        if form == "foreground-flag":
            # The worst case: the key written on the command line of a process that serves for its
            # whole life (systemd's ExecStart=). The warning goes to a file: nobody reads the pipe.
            err = (tmp_path / "foreground.err").open("w")
            foreground = subprocess.Popen(
                [sys.executable, "-m", "kamiwaza_cli", *start, "--foreground", "--api-key", key],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            _wait_ping(server.url)
        else:
            if form == "file":
                key_file = tmp_path / "key"
                key_file.write_text(key + "\n")
                start += ["--api-key-file", str(key_file)]
            elif form == "stdin":
                start += ["--api-key", "-"]
                stdin = key + "\n"
            else:
                env["KAMIWAZA_LOCAL_API_KEY"] = key
            r = kamiwaza(env, *start, input=stdin)
            assert r.returncode == 0, r.stderr
            assert "Warning" not in r.stderr  # only a key on the command line is warned about

        assert _argv_holding(key) == []
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/models/").status_code == 401
            assert http.get("/models/", headers=_auth(key + "x")).status_code == 401
            assert http.get("/models/", headers=_auth(key)).status_code == 200
        if foreground is not None:
            assert foreground.pid == server.pid()  # re-executed in place: still the process systemd started
    finally:
        kamiwaza(server.env, "server", "stop", timeout=60)
        if foreground is not None:
            try:
                foreground.wait(timeout=30)
            except subprocess.TimeoutExpired:
                foreground.kill()
                foreground.wait()
    if form == "foreground-flag":
        warning = (tmp_path / "foreground.err").read_text()
        assert "visible to other users" in warning and key not in warning


# --- empty and blank keys -----------------------------------------------------------------------------

_BLANK_KEYS = {
    "flag-empty": (["--api-key", ""], {}, None),
    "flag-blank": (["--api-key", "  \t "], {}, None),
    "env-empty": ([], {"KAMIWAZA_LOCAL_API_KEY": ""}, None),
    "env-blank": ([], {"KAMIWAZA_LOCAL_API_KEY": " \t "}, None),
    "file-empty": (["--api-key-file", "{empty}"], {}, None),
    "file-blank": (["--api-key-file", "{blank}"], {}, None),
    "stdin-empty": (["--api-key", "-"], {}, "\n"),
    "foreground-env-blank": (["--foreground"], {"KAMIWAZA_LOCAL_API_KEY": "   "}, None),
}


@pytest.mark.parametrize("case", sorted(_BLANK_KEYS))
def test_an_empty_or_blank_key_is_refused_before_anything_starts(case: str, tmp_path: Path) -> None:
    args, extra_env, stdin = _BLANK_KEYS[case]
    (tmp_path / "empty").write_text("")
    (tmp_path / "blank").write_text("\n  \n\t\n")
    args = [a.format(empty=tmp_path / "empty", blank=tmp_path / "blank") for a in args]
    server = make_server(tmp_path / "home", None)
    env = {**server.env, **extra_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kamiwaza_cli", "server", "start", "--port", str(server.port), *args],
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A foreground server that wrongly starts never returns: that is a failure, not a hang.
        out, err = proc.communicate(stdin, timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"a server started with a blank key ({case}): {err}")
    finally:
        kamiwaza(server.env, "server", "stop", timeout=60)
    assert proc.returncode == 2, (out, err)
    line = one_error(err)
    assert "API key" in line and "empty" in line, line
    assert out == ""
    assert not _listening(server.port)
    assert not (server.home / "server.json").exists()


# --- file modes ---------------------------------------------------------------------------------------


def test_the_state_directory_is_0700_and_every_file_in_it_0600(srv: LocalServer, tmp_path: Path) -> None:
    env = {"KAMIWAZA_API_KEY": KEY}
    assert srv.cli("config", "set-url", srv.url, "--name", "lab").exit_code == 0  # config.json
    r = srv.cli("login", "-u", USER, "--password-stdin", input=PASSWORD + "\n")  # credentials, auth_secret
    assert r.exit_code == 0, r.stderr
    model = write_tiny_gguf(tmp_path / "tiny-Q8_0.gguf", name="tiny", n_floats=256)
    r = srv.cli("pull", str(model), env=env)  # catalog rows, a blob
    assert r.exit_code == 0, r.stderr
    # A deployment of a model the engine cannot load: it fails at once, but leaves its engine log.
    r = srv.cli("serve", "tiny-Q8_0", env=env)
    assert r.exit_code != 0
    # The chat's input history, as the REPL opens it (in a process of its own: prompt_toolkit wants
    # real standard streams, which pytest has replaced).
    history = (
        "from pathlib import Path; from kamiwaza_cli.chat.repl import Repl; "
        f"Repl(None, history_file=Path({str(srv.home / 'history')!r}))._make_prompt().history.append_string('hi')"
    )
    subprocess.run([sys.executable, "-c", history], env=srv.env, check=True, capture_output=True, timeout=60)

    modes = _modes(srv.home)
    names = set(modes)
    for expected in ("catalog.db", "server.log", "server.json", "config.json", "credentials.json", "auth_secret"):
        assert expected in names, sorted(names)
    assert "history" in names, sorted(names)
    assert any(n.startswith("models/") and n.endswith(".gguf") for n in names), sorted(names)
    assert any(n.startswith("logs/") and n.endswith(".log") for n in names), sorted(names)
    loose = {n: oct(m) for n, m in modes.items() if m != (0o700 if n == "." or n.endswith("/") else 0o600)}
    assert loose == {}, f"not private: {loose}"


def test_a_looser_state_directory_is_tightened_when_the_server_starts(tmp_path: Path) -> None:
    server = make_server(tmp_path / "home", None)
    (server.home / "old").mkdir(parents=True)
    (server.home / "old" / "engine.log").write_text("from an older version\n")
    (server.home / "notes.txt").write_text("hand-made\n")
    os.chmod(server.home, 0o755)
    os.chmod(server.home / "old", 0o755)
    os.chmod(server.home / "old" / "engine.log", 0o644)
    os.chmod(server.home / "notes.txt", 0o664)
    server.start()
    try:
        modes = _modes(server.home)
    finally:
        server.stop()
    loose = {n: oct(m) for n, m in modes.items() if m & 0o077}
    assert loose == {}, f"still open to others: {loose}"


# --- control characters -------------------------------------------------------------------------------


def _no_raw_controls(where: str, text: str) -> None:
    assert not RAW.search(text), f"raw control character in {where}: {text!r}"
    forged = [ln for ln in text.splitlines() if ln.lstrip().startswith(FORGED[:10])]
    assert forged == [], f"forged line in {where}: {forged}"


def test_control_characters_in_names_reach_the_terminal_and_the_log_escaped(srv: LocalServer, tmp_path: Path) -> None:
    import pexpect

    # A model and file name chosen by someone else (here: a file import through the API, which the
    # CLI's own name parser would refuse); the CLI shows it, the server logs it.
    path = write_tiny_gguf(tmp_path / f"{HOSTILE}.gguf", name="tiny", n_floats=64)
    resp = loopback.post(f"{srv.url}/models/download/", json={"model": path.as_uri()}, headers=_auth(KEY), timeout=30)
    assert resp.status_code == 200, resp.text
    model_id = resp.json()["model_id"]
    env = {"KAMIWAZA_API_KEY": KEY}
    deadline = time.monotonic() + 30
    while True:
        listed = json.loads(srv.cli("list", "--json", env=env).stdout)
        row = next(m for m in listed if m["id"] == model_id)
        if row["status"] == "ready" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row["name"] == HOSTILE and row["status"] == "ready"  # the data itself is kept as it is

    for args in (("list",), ("show", model_id)):
        r = srv.cli(*args, env=env)
        assert r.exit_code == 0, r.stderr
        _no_raw_controls(f"kamiwaza {' '.join(args)} (pipe)", r.stdout + r.stderr)
        assert "trap\\x1b[31m\\r\\x07\\x9b[bold]loud[red]\\u202e\\n" + FORGED in r.stdout

        # On a terminal the table is rich's: its own styling aside, the name must come out the same,
        # "[bold]" and "[red]" printed rather than obeyed.
        child = pexpect.spawn(
            sys.executable,
            ["-m", "kamiwaza_cli", *args],
            env={**srv.env, "KAMIWAZA_BASE_URL": srv.url, "TERM": "xterm", **env},
            encoding="utf-8",
            timeout=60,
            dimensions=(50, 500),
        )
        child.expect(pexpect.EOF)
        child.close()
        shown = str(child.before).replace("\r\n", "\n")
        assert child.exitstatus == 0, shown
        assert "\x1b[31m" not in shown
        assert "[bold]loud[red]" in shown
        _no_raw_controls(f"kamiwaza {' '.join(args)} (terminal)", re.sub(r"\x1b\[[0-9;]*m", "", shown))

    log = (srv.home / "server.log").read_text(errors="replace")
    assert "trap\\x1b[31m" in log  # the download was logged, escaped
    _no_raw_controls("server.log", log)


def test_no_logger_can_forge_a_line_not_even_through_an_exception() -> None:
    """The server's log rule on its own, for what the end-to-end test cannot provoke: %-args, a
    mapping, an f-string message and the text of an exception, all through an ordinary handler."""
    import io
    import logging

    from kamiwaza_cli.textsafe import install_log_escaping

    previous = logging.getLogRecordFactory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("kamiwaza.tests.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        install_log_escaping()
        logger.info("downloaded %s (%d bytes)", HOSTILE, 480)
        logger.info("model %(name)s", {"name": HOSTILE})
        logger.warning(f"f-string {HOSTILE}")
        try:
            raise ValueError(f"bad name {HOSTILE}")
        except ValueError:
            logger.exception("import of %s failed", HOSTILE)
    finally:
        logging.setLogRecordFactory(previous)  # the rest of the session logs as before
        logger.removeHandler(handler)
    text = stream.getvalue()
    _no_raw_controls("the log", text)
    assert text.count("trap\\x1b[31m") == 5, text
    assert "(480 bytes)" in text and "Traceback (most recent call last):" in text


# --- password guessing (last: it leaves 127.0.0.1 locked out for a minute) -----------------------------


def _token(base: str, username: str, password: str, source: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as http:
        return http.post(
            f"{base}/auth/token", data={"grant_type": "password", "username": username, "password": password}
        )


def _can_bind(address: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def test_password_guessing_is_throttled_per_address_and_logged(srv: LocalServer) -> None:
    failures = 0
    if _can_bind("127.0.0.2") and _can_bind("127.0.0.3"):  # Linux answers all of 127/8; macOS only .1
        for _ in range(5):
            assert _token(srv.url, USER, WRONG, "127.0.0.2").status_code == 401
        refused = _token(srv.url, USER, PASSWORD, "127.0.0.2")  # even the right password, now
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "access_token" not in refused.text
        # Another address is not affected, and a success wipes the slate clean.
        for _ in range(4):
            assert _token(srv.url, USER, WRONG, "127.0.0.3").status_code == 401
        assert _token(srv.url, USER, PASSWORD, "127.0.0.3").status_code == 200
        for _ in range(4):
            assert _token(srv.url, USER, WRONG, "127.0.0.3").status_code == 401
        failures += 13

    # Through the CLI, from 127.0.0.1: five wrong passwords, then one clear line.
    for _ in range(5):
        r = srv.cli("login", "-u", USER, "--password-stdin", input=WRONG + "\n")
        assert r.exit_code == 5 and "wrong username or password" in r.stderr, r.stderr
    r = srv.cli("login", "-u", USER, "--password-stdin", input=PASSWORD + "\n")
    assert r.exit_code == 5, r.stderr
    line = one_error(r.stderr)
    assert "too many failed attempts" in line, r.stderr
    assert re.search(r"wait \d+ s", r.stderr), r.stderr
    failures += 5

    log = (srv.home / "server.log").read_text(errors="replace")
    failed = [ln for ln in log.splitlines() if "failed login for user" in ln]
    assert len(failed) >= failures, failed
    assert all(f"'{USER}'" in ln and " from 127.0.0." in ln for ln in failed), failed
    assert any("login refused" in ln for ln in log.splitlines())
    assert WRONG not in log and PASSWORD not in log
