"""Vision wiring, end to end with the real CLI, local server and llama.cpp.

No real projector (mmproj) can be obtained here, so what is proven is the wiring: the best projector
is pulled with a quantization as its companion (and no other), the engine is started with it
(``--mmproj`` in the argv the supervisor logs), and a picture given to ``run --image`` reaches the
engine as an ``image_url`` part (llama.cpp, serving a model without a projector, refuses exactly
that). That a reply describes a picture is left unproven here.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GEMMA_REPO, LocalServer
from fakehub import FakeHub, HubFile
from ggufgen import write_tiny_gguf

from kamiwaza_cli.chat.images import ImageError, image_part

REPO = "kamiwaza-test/vision-GGUF"


def png(path: Path) -> Path:
    """A 1x1 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    raw += chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")
    path.write_bytes(raw)
    return path


@pytest.fixture(scope="module")
def vision_repo(hub: FakeHub, gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("vision")
    f16 = write_tiny_gguf(d / "mmproj-f16.gguf", name="projector", arch="clip")
    q8 = write_tiny_gguf(d / "mmproj-q8.gguf", name="projector", arch="clip")
    hub.add_repo(
        REPO,
        [
            HubFile("vision-Q4_K_M.gguf", gemma_path),
            HubFile("mmproj-vision-Q8_0.gguf", q8),
            HubFile("mmproj-vision-F16.gguf", f16),
        ],
    )
    yield REPO


def test_the_projector_is_pulled_with_the_weights_and_given_to_the_engine(
    server: LocalServer, vision_repo: str
) -> None:
    r = server.cli("pull", f"{REPO}:q4_k_m", "--json")
    assert r.exit_code == 0, r.stderr
    [variant] = json.loads(r.stdout)["variants"]
    assert (variant["file"], variant["projector"], variant["status"]) == (
        "vision-Q4_K_M.gguf",
        "mmproj-vision-F16.gguf",
        "ready",
    )
    model_dir = server.home / "models" / json.loads(r.stdout)["id"]
    assert sorted(p.name for p in model_dir.iterdir()) == ["mmproj-vision-F16.gguf", "vision-Q4_K_M.gguf"]
    # The stand-in projector is no real one: the engine is started with it, then refuses it.
    served = server.cli("serve", f"{REPO}:q4_k_m")
    started = [ln for ln in server.cli("logs", f"{REPO}:q4_k_m").stdout.splitlines() if " starting " in ln]
    assert started and f"--mmproj {model_dir / 'mmproj-vision-F16.gguf'}" in started[-1]
    assert str(model_dir / "vision-Q4_K_M.gguf") in started[-1]
    assert served.exit_code == 1
    # A lost projector makes the quantization incomplete; pulling it again fetches the projector alone.
    (model_dir / "mmproj-vision-F16.gguf").unlink()
    assert "vision-GGUF:q4_k_m (incomplete: 1/2 files)" in server.cli("list").stdout
    repaired = server.cli("pull", f"{REPO}:q4_k_m")
    assert repaired.exit_code == 0, repaired.stderr
    assert "mmproj-vision-F16.gguf" in repaired.stderr and "vision-Q4_K_M.gguf" not in repaired.stderr
    assert (model_dir / "mmproj-vision-F16.gguf").is_file()


def test_run_image_reaches_the_engine(server: LocalServer, tmp_path: Path) -> None:
    picture = png(tmp_path / "red.png")
    r = server.cli("run", f"{GEMMA_REPO}:q4_k_m", "--image", str(picture), "--max-tokens", "4", "What is this?")
    # This model has no projector: llama.cpp refuses the image part, which proves it was sent as one.
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-2:] == [
        "Error: the model refused the picture: image input is not supported - hint: if this is unexpected, "
        "you may need to provide the mmproj",
        "  → pictures need a vision model served with its projector, e.g.: kamiwaza run gemma3-4b",
    ]
    server.cli("stop", "--all")


def test_run_image_refuses_what_is_not_a_picture_before_anything_else(server: LocalServer, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    r = server.cli("run", "qwen2.5-0.5b-instruct", "--image", str(text), "hi")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == f"Error: {text} is not a PNG, JPEG, GIF, WebP or BMP image"
    listed = json.loads(server.cli("list", "--json").stdout)
    assert all(m["repo_id"] != "Qwen/Qwen2.5-0.5B-Instruct-GGUF" for m in listed)


def test_image_part(tmp_path: Path) -> None:
    part = image_part(png(tmp_path / "a.png"))
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    with pytest.raises(ImageError, match="cannot read"):
        image_part(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        image_part(tmp_path)


def test_image_in_the_chat_goes_with_the_next_message_only(server: LocalServer, tmp_path: Path) -> None:
    import pexpect
    from test_chat import ask, wait_prompt

    picture = png(tmp_path / "red.png")
    env = {**server.env, "KAMIWAZA_BASE_URL": server.url, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "kamiwaza_cli", "run", f"{GEMMA_REPO}:q4_k_m", "--max-tokens", "4"],
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
    )
    try:
        wait_prompt(child)
        assert "Attached red.png; it goes with your next message" in ask(child, f"/image {picture}")
        refused = ask(child, "What is in this picture?")  # no projector here: the engine refuses the image
        assert "the model refused the picture: image input is not supported" in refused, refused
        assert f"Error: cannot read {tmp_path}/none.txt" in ask(child, f"/image {tmp_path}/none.txt")
        after = ask(child, "Hello")  # the picture is not sent again
        assert "mmproj" not in after.lower(), after
    finally:
        child.close(force=True)
        server.cli("stop", "--all")
