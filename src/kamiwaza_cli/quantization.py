"""Quantization tags in file names, understood exactly as kamiwaza-sdk understands them.

This module owns the CLI's reading of tags such as ``q4_k_m`` in model file
names: detecting them, matching a requested tag, the fallback order when the
requested one is missing, and which files of a repository a download fetches.
It re-implements ``kamiwaza_sdk.utils.quant_manager.QuantizationManager`` and
the file selection of ``ModelDownloadMixin.initiate_model_download`` (SDK
1.3.0) rule for rule, quirks included, because only one module of the project
may import the SDK and the local server must not depend on it at all, yet a
file the CLI picks locally has to be the file the platform would pick.
``tests/test_quantization.py`` checks the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "DEFAULT_QUANTIZATION",
    "available_quantizations",
    "detect_quantization",
    "fallback_order",
    "has_multiple_quantizations",
    "is_valid_tag",
    "matches",
    "select_files",
]

# The SDK's default for initiate_model_download and download_and_deploy_model.
DEFAULT_QUANTIZATION = "q6_k"

_TAG = r"q[2-8]_k(?:_[a-z0-9]+)?|q[2-8]_[0-9]+|iq[1-4]_[a-z0-9]+|fp\d+"

# The SDK's pattern, verbatim. A tag only counts after a "-", so TheBloke-style
# "llama-2-7b.Q4_K_M.gguf" has no tag, and "f16"/"bf16" are never tags.
_IN_FILENAME = re.compile(rf"-({_TAG})(?=[._-]|$)", re.IGNORECASE)
_WHOLE_TAG = re.compile(_TAG, re.IGNORECASE)

_VARIANTS: dict[str, tuple[str, ...]] = {
    "q2_k": ("q2_k", "q2_k_l", "q2_k_m", "q2_k_s"),
    "q3_k": ("q3_k", "q3_k_l", "q3_k_m", "q3_k_s", "q3_k_xl"),
    "q4_k": ("q4_k", "q4_k_l", "q4_k_m", "q4_k_s"),
    "q4_0": ("q4_0",),
    "q4_1": ("q4_1",),
    "q5_k": ("q5_k", "q5_k_l", "q5_k_m", "q5_k_s"),
    "q6_k": ("q6_k", "q6_k_l", "q6_k_m", "q6_k_s"),
    "q8_0": ("q8_0",),
    "iq1": ("iq1_m", "iq1_s"),
    "iq2": ("iq2_m", "iq2_s", "iq2_xs", "iq2_xxs"),
    "iq3": ("iq3_m", "iq3_s", "iq3_xs"),
    "iq4": ("iq4_nl", "iq4_xs"),
    "fp16": ("fp16",),
}

# Best quality first, as in the SDK, including its placing q8_0 last: asking
# for q8_0 when it is missing falls back to q2_k before anything else.
_PRIORITY: tuple[str, ...] = ("fp16", "q6_k", "q5_k", "q4_k", "q4_0", "q4_1", "q3_k", "q2_k", "q8_0")


def _tags_in(filename: str) -> list[str]:
    # The SDK also strips a "-00001-of-00002" suffix from each match, but a
    # match can never contain "-", so that step is a no-op and is left out.
    return [tag.lower() for tag in _IN_FILENAME.findall(filename)]


def detect_quantization(filename: str) -> str | None:
    """The last quantization tag in ``filename``, lower-cased, or None."""
    if not filename:
        return None
    tags = _tags_in(filename)
    return tags[-1] if tags else None


def matches(filename: str, target: str) -> bool:
    """True if any tag in ``filename`` is ``target`` or a variant of it (q4_k matches q4_k_m)."""
    if not filename:
        return False
    wanted = target.lower()
    return any(tag == wanted or tag.startswith(f"{wanted}_") for tag in _tags_in(filename))


def fallback_order(target: str) -> list[str]:
    """Tags to try, in order, when no file matches ``target``."""
    lowered = target.lower()
    if "_" in lowered:
        first, second = lowered.split("_")[:2]
        base = f"{first}_{second}"
    else:
        base = lowered
    order = list(_VARIANTS.get(base, ()))
    if base in _PRIORITY:
        index = _PRIORITY.index(base)
        for better in reversed(_PRIORITY[:index]):
            order.extend(_VARIANTS[better])
        for worse in _PRIORITY[index + 1 :]:
            order.extend(_VARIANTS[worse])
    return order


def _matching(names: list[str], target: str) -> list[str]:
    return [name for name in names if matches(name, target)]


def _filter_with_fallback(names: list[str], target: str) -> list[str]:
    hits = _matching(names, target)
    if hits:
        return hits
    # A fully specified tag (q4_k_m) is taken as a firm request: no substitute.
    if target.count("_") > 1:
        return []
    for candidate in fallback_order(target):
        hits = _matching(names, candidate)
        if hits:
            return hits
    return []


def available_quantizations(names: Iterable[str]) -> list[str]:
    """The distinct tags detected in ``names``, sorted."""
    return sorted({tag for name in names if (tag := detect_quantization(name))})


def has_multiple_quantizations(names: Iterable[str]) -> bool:
    """True if ``names`` carry more than one distinct tag (the SDK then filters)."""
    return len(available_quantizations(names)) > 1


def select_files(names: list[str], target: str = DEFAULT_QUANTIZATION) -> list[str]:
    """The files of a repository that a download of quantization ``target`` fetches.

    With one or no tag among ``names`` every file is fetched, whatever
    ``target`` says (README and tokenizer files included). With several, only
    files matching ``target`` or its first available fallback are; ``[]``
    means nothing fits, which the SDK reports as an error.
    """
    if not has_multiple_quantizations(names):
        return list(names)
    return _filter_with_fallback(names, target)


def is_valid_tag(tag: str) -> bool:
    """True if ``tag`` is a tag the SDK can recognise in a file name (q4_k_m, Q8_0, iq4_xs, fp16)."""
    return _WHOLE_TAG.fullmatch(tag) is not None
