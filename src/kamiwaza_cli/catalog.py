"""Model names: the friendly-name catalog, ``name:quant`` tags and source references.

A user names a model by a friendly name (``qwen2.5-7b-instruct``), a Hugging Face
repo id (``Qwen/Qwen2.5-7B-Instruct-GGUF``), either with ``:quant``, a local path
(``./m.gguf``, ``file:///...``) or an http(s) URL to a ``.gguf``. ``parse`` turns
the text into a ``ModelRef`` without any I/O beyond checking a local path;
``suggest`` gives the "did you mean" candidates.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import quantization
from .errors import UsageError

# Friendly name -> Hugging Face repo id. GGUF repos only: the local server runs llama.cpp.
CATALOG: dict[str, str] = {
    **{
        f"qwen2.5-{size}-instruct": f"Qwen/Qwen2.5-{size.upper()}-Instruct-GGUF"
        for size in ("0.5b", "1.5b", "3b", "7b", "14b", "32b")
    },
    **{
        f"qwen2.5-coder-{size}-instruct": f"Qwen/Qwen2.5-Coder-{size.upper()}-Instruct-GGUF"
        for size in ("0.5b", "1.5b", "3b", "7b", "14b", "32b")
    },
    "llama3.2-1b-instruct": "bartowski/Llama-3.2-1B-Instruct-GGUF",
    "llama3.2-3b-instruct": "bartowski/Llama-3.2-3B-Instruct-GGUF",
    "llama3.1-8b-instruct": "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
    "gemma3-270m": "ggml-org/gemma-3-270m-it-GGUF",
    "gemma3-1b": "ggml-org/gemma-3-1b-it-GGUF",
    "gemma3-4b": "ggml-org/gemma-3-4b-it-GGUF",
    "gemma3-12b": "ggml-org/gemma-3-12b-it-GGUF",
    "gemma3-27b": "ggml-org/gemma-3-27b-it-GGUF",
    "phi3-mini": "microsoft/Phi-3-mini-4k-instruct-gguf",
    "phi3.5-mini": "bartowski/Phi-3.5-mini-instruct-GGUF",
    "phi4": "microsoft/phi-4-gguf",
    "phi4-mini": "bartowski/microsoft_Phi-4-mini-instruct-GGUF",
    "mistral-7b-instruct": "bartowski/Mistral-7B-Instruct-v0.3-GGUF",
    "mistral-nemo-instruct": "bartowski/Mistral-Nemo-Instruct-2407-GGUF",
    "mistral-small-24b-instruct": "bartowski/Mistral-Small-24B-Instruct-2501-GGUF",
}

# Spellings people type for the same models (ollama's style without the colon).
ALIASES: dict[str, str] = {
    "qwen2.5": "qwen2.5-7b-instruct",
    "llama3.2": "llama3.2-3b-instruct",
    "gemma3": "gemma3-4b",
    "phi3": "phi3-mini",
    "mistral": "mistral-7b-instruct",
}

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")


@dataclass(frozen=True)
class ModelRef:
    """What a user's model text refers to.

    kind: "repo" (a hub repo id, from the catalog or typed), "file", "url", or
    "name" (not resolvable offline: a downloaded model's name, or unknown).
    ``source`` is what the platform is asked for: the repo id, a file:// URI or the URL.
    """

    text: str
    kind: str
    source: str
    quant: str | None = None
    friendly: str | None = None


def split_tag(text: str) -> tuple[str, str | None]:
    """``NAME:QUANT`` -> (NAME, quant lower-cased); (text, None) without a tag. UsageError for a
    suffix that is not a tag of the grammar (quantization.py)."""
    # A URL or Windows-ish path has colons that are not tags; only the last ':' of a
    # plain name counts, and only when what follows looks like a tag, not a port/path.
    if "://" in text:
        return text, None
    base, sep, tag = text.rpartition(":")
    if not sep:
        return text, None
    if not base or not tag:
        raise UsageError(
            f"malformed model name {text!r}: expected NAME or NAME:QUANT (e.g. qwen2.5-7b-instruct:q4_k_m)",
            hint="list known names with: kamiwaza list",
        )
    if not quantization.is_valid_tag(tag):
        raise UsageError(
            f"{tag!r} in {text!r} is not a quantization tag (examples: q4_k_m, q6_k, q8_0, iq4_xs, f16, q4)",
            hint=f"try: kamiwaza pull {base}:q4_k_m",
        )
    return base, tag.lower()


def _looks_like_path(text: str) -> bool:
    # Repo ids never end in .gguf, so "models/m.gguf" is a relative path, not owner/repo.
    return text.startswith(("./", "../", "/", "~")) or text.lower().endswith(".gguf")


def parse(text: str) -> ModelRef:
    raw = text.strip()
    if not raw:
        raise UsageError("empty model name", hint="list models with: kamiwaza list")
    if any(ord(c) < 32 for c in raw):
        raise UsageError(f"model name {raw!r} contains control characters", hint="see models with: kamiwaza list")

    lowered = raw.lower()
    if lowered.startswith(("http://", "https://")):
        return _parse_url(raw)
    if lowered.startswith("file:"):
        return _parse_file(_file_uri_path(raw), raw)

    name, quant = split_tag(raw)
    if _looks_like_path(name):
        return _parse_file(Path(name).expanduser(), raw, quant)

    key = ALIASES.get(name.lower(), name.lower())
    if key in CATALOG:
        return ModelRef(raw, "repo", CATALOG[key], quant, key)
    if REPO_ID_RE.match(name):
        if ".." in name:
            raise UsageError(f"invalid repo id {name!r}: '..' is not allowed")
        return ModelRef(raw, "repo", name, quant)
    if "/" in name or "\\" in name or ".." in name:
        raise UsageError(
            f"invalid model name {name!r}: expected OWNER/REPO, a catalog name, a path or a URL",
            hint="see known names with: kamiwaza list --catalog",
        )
    return ModelRef(raw, "name", name, quant)


def _file_uri_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise UsageError(f"file URL {uri!r} names a remote host; use file:///absolute/path.gguf")
    return Path(unquote(parts.path))


def _parse_file(path: Path, text: str, quant: str | None = None) -> ModelRef:
    resolved = path.expanduser().resolve()
    if not resolved.exists():
        raise UsageError(f"no such file: {path}", hint="check the path, or pull by name: kamiwaza pull NAME")
    if resolved.is_dir():
        raise UsageError(
            f"{path} is a directory; give the .gguf file inside it", hint=f"e.g.: kamiwaza pull {path}/MODEL.gguf"
        )
    return ModelRef(text, "file", resolved.as_uri(), quant)


def _parse_url(url: str) -> ModelRef:
    parts = urlsplit(url)
    if not parts.hostname:
        raise UsageError(
            f"invalid URL {url!r}: no host", hint="e.g.: kamiwaza pull https://host/path/model-Q4_K_M.gguf"
        )
    filename = unquote(parts.path.rsplit("/", 1)[-1])
    if not filename.lower().endswith(".gguf"):
        raise UsageError(
            f"URL {url!r} does not name a .gguf file",
            hint="give a direct link to a .gguf, e.g. https://host/path/model-Q4_K_M.gguf",
        )
    return ModelRef(url, "url", url, None)


def suggest(text: str, known: list[str]) -> list[str]:
    """Up to three names close to ``text`` from the catalog and ``known`` (downloaded) names."""
    base = text.rsplit(":", 1)[0].lower()
    pool = {n.lower(): n for n in [*CATALOG, *ALIASES, *known]}
    close = difflib.get_close_matches(base, list(pool), n=3, cutoff=0.6)
    contained = [k for k in pool if base and (base in k) and k not in close]
    return [pool[k] for k in (close + contained)[:3]]
