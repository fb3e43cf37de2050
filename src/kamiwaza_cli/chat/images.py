"""Pictures for vision models: reading an image file the user names into an OpenAI ``image_url``
content part (a base64 data URL), which llama-server passes to the model's projector (mmproj).

The one check made here is the one a user needs before anything is sent: the file exists, is an
image of a kind llama.cpp decodes (PNG, JPEG, GIF, WebP, BMP), and is not huge.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

MAX_IMAGE_BYTES = 20 * 1024 * 1024

_KINDS = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


class ImageError(ValueError):
    """The file cannot be sent as a picture; the message says why."""


def image_part(path: Path) -> dict[str, Any]:
    """The chat content part carrying the picture in ``path``."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"{path} is {size} bytes; images up to {MAX_IMAGE_BYTES // (1024 * 1024)} MiB are sent")
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror}") from None
    kind = next((mime for magic, mime in _KINDS if data.startswith(magic)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "image/webp"
    if kind is None:
        raise ImageError(f"{path} is not a PNG, JPEG, GIF, WebP or BMP image")
    url = f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}
