"""Quantization tags: the one grammar that says which files of a GGUF repository a tag means.

This module owns the reading of tags such as ``q4_k_m`` in file names and the choice of files a
``name:TAG`` stands for, for every command (pull, serve, run, show, rm, stop, list, ps) and for
the local server's own defaults. The rules, documented in README.md ("Quantization tags"):

- A file's quantization is a llama.cpp quantization name that is a *whole token* of its name:
  bounded by ``-`` ``.`` ``_`` ``/`` or the ends, never a prefix of a longer one (``q4_0`` is not
  in ``Q4_0_4_4``, ``q6_k`` is not in ``Q6_K_L``). Names: ``q2_k`` .. ``q8_0``, ``q4_k_l``,
  ``q3_k_xl``, ``iq1_s`` .. ``iq4_xs``, ``tq1_0``, ``mxfp4``, unsloth's ``ud-`` dynamic quants, the
  precisions ``f16``/``fp16``/``bf16``/``f32`` and a repo's own short names (Phi's ``q4``).
  Case-insensitive; ``fp16`` = ``f16``, and ``q3_k``/``q4_k``/``q5_k`` are llama.cpp's aliases of
  the ``_m`` types. The file name's own token counts first, then its folder's (``BF16/x.gguf``).
- A quantization's files are all its weight files: every part of a split model
  (``-00001-of-00002``) and the files in its sub-folder. Projectors (``mmproj``) are not weights:
  the best one (f16 first) rides along with any quantization as a companion file.
- ARM repacks (``Q4_0_4_4``, ``Q4_0_4_8``, ``Q4_0_8_8``) are chosen only when asked for by name.
- No tag: ``q6_k``, then ``DEFAULT_ORDER``; full precision only when the repo has nothing else.
  A tag that no file carries is refused (``NoMatch``) with the quantizations the repo has.

Standard library only: the local server uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ORDER",
    "DEFAULT_QUANTIZATION",
    "Choice",
    "NoMatch",
    "available_quantizations",
    "choose",
    "detect_quantization",
    "is_projector",
    "is_valid_tag",
    "is_weight",
    "matches",
    "normalize",
    "split_part",
]

DEFAULT_QUANTIZATION = "q6_k"

_LABEL = (
    r"(?:ud[-_])?(?:"
    r"iq[1-4]_(?:xxs|xs|nl|s|m)(?:_[48]_[48])?"
    r"|q[2-8]_k(?:_(?:xxl|xl|s|m|l))?"
    r"|q[4-8]_[01](?:_[48]_[48])?"
    r"|tq[12]_0"
    r"|mxfp4(?:_moe)?"
    r"|bf16|fp16|f16|fp32|f32"
    r"|q[2-8]"
    r")"
)
# A label is a whole token: a separator (or the start) before it, and after it a separator or the
# end, but not "_", which would make it the start of a longer name (q4_k in q4_k_mx).
_IN_NAME = re.compile(rf"(?<![^-._/])({_LABEL})(?![^-./])", re.IGNORECASE)
_WHOLE = re.compile(_LABEL, re.IGNORECASE)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_REPACK = re.compile(r"_[48]_[48]$")
_ALIASES = {"fp16": "f16", "fp32": "f32", "q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}
FULL_PRECISION = ("f16", "bf16", "f32")

# No tag given: the first of these the repo has. Near q6_k and smaller first (a fallback should not
# double the download), then larger, then the lower bits; full precision only when nothing else is.
DEFAULT_ORDER: tuple[str, ...] = (
    "q6_k", "q5_k_m", "q4_k_m", "q8_0", "q5_k_s", "q4_k_s", "q6", "q5", "q4", "q8",
    "q5_0", "q5_1", "q4_0", "q4_1", "iq4_xs", "iq4_nl", "mxfp4",
    "q6_k_l", "q5_k_l", "q4_k_l", "ud-q6_k_xl", "ud-q5_k_xl", "ud-q4_k_xl", "ud-q8_k_xl",
    "q3_k_l", "q3_k_m", "iq3_m", "q3_k_s", "iq3_s", "iq3_xs", "iq3_xxs", "q3_k_xl", "ud-q3_k_xl", "q3",
    "q2_k_l", "q2_k", "ud-q2_k_xl", "iq2_m", "iq2_s", "iq2_xs", "iq2_xxs", "ud-iq2_m", "ud-iq2_xxs", "q2",
    "iq1_m", "iq1_s", "ud-iq1_m", "ud-iq1_s", "tq2_0", "tq1_0", "ud-tq1_0",
)  # fmt: skip
_PROJECTOR_ORDER = ("f16", "bf16", "f32", "q8_0")


def normalize(tag: str) -> str:
    """The canonical spelling of a tag: lower case, ``ud-`` with a dash, aliases resolved."""
    lowered = tag.strip().lower()
    if lowered.startswith("ud_"):
        lowered = "ud-" + lowered[3:]
    prefix, base = ("ud-", lowered[3:]) if lowered.startswith("ud-") else ("", lowered)
    return prefix + _ALIASES.get(base, base)


def is_valid_tag(tag: str) -> bool:
    """True if ``tag`` is a quantization name of the grammar (q4_k_m, Q8_0, iq4_xs, f16, q4, ud-q4_k_xl)."""
    return _WHOLE.fullmatch(tag.strip()) is not None and tag == tag.strip()


def _basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def is_projector(name: str) -> bool:
    """A multimodal projector (llama.cpp's ``mmproj`` GGUF), a companion of a vision model's weights."""
    return re.search(r"(?<![^-._/])mmproj(?![^-._/])", _basename(name), re.IGNORECASE) is not None


def is_weight(name: str) -> bool:
    """A GGUF file of model weights: not a projector, not an importance matrix."""
    base = _basename(name).lower()
    return base.endswith(".gguf") and not is_projector(name) and "imatrix" not in base


def detect_quantization(name: str) -> str | None:
    """The quantization ``name`` carries as written (lower-cased; the file's own token, else its
    folder's), or None."""
    if not name:
        return None
    for part in (_basename(name), name.rpartition("/")[0]):
        labels = _IN_NAME.findall(part)
        if labels:
            label = str(labels[-1]).lower()
            return "ud-" + label[3:] if label.startswith("ud_") else label
    return None


def matches(name: str, tag: str) -> bool:
    """True if the file ``name`` is of quantization ``tag`` (whole token, aliases resolved)."""
    label = detect_quantization(name)
    return label is not None and normalize(label) == normalize(tag)


def split_part(name: str) -> tuple[int, int] | None:
    """(part, count) of a llama.cpp split file (``-00002-of-00003.gguf``), or None."""
    m = _SPLIT.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def available_quantizations(names: Iterable[str]) -> list[str]:
    """The distinct quantizations of the weight files among ``names``, as written, sorted."""
    return sorted({label for n in names if is_weight(n) and (label := detect_quantization(n))})


class NoMatch(ValueError):
    """No weight file of the quantization asked for; ``available`` lists those the repo has."""

    def __init__(self, wanted: str | None, available: list[str]) -> None:
        self.wanted = wanted
        self.available = available
        listed = ", ".join(available) or "none"
        if wanted is None:
            super().__init__(f"no quantization to choose by default (it has: {listed})")
        else:
            super().__init__(f"no {wanted} file (it has: {listed})")


@dataclass(frozen=True)
class Choice:
    """The files a tag means in a listing. ``quantization`` is the label as written (None for an
    untagged GGUF or a repo without GGUF weights); ``weights`` every weight file of it, split parts
    in order; ``projector`` the companion file; ``defaulted`` when no tag was given and the pick
    is not ``q6_k``; ``gguf`` False for a repo with no GGUF weights at all (then ``weights`` is
    every file: only an engine such as vLLM can say what it needs)."""

    quantization: str | None
    weights: tuple[str, ...]
    projector: str | None = None
    defaulted: bool = False
    gguf: bool = True

    @property
    def files(self) -> list[str]:
        return [*self.weights, *([self.projector] if self.projector else [])]

    @property
    def first(self) -> str:
        """The file an engine is given (the first part of a split model)."""
        return self.weights[0]


def _sort_key(name: str) -> tuple[str, int]:
    part = split_part(name)
    stem = _SPLIT.sub("", name) if part else name
    return (stem.lower(), part[0] if part else 0)


def _best_projector(names: list[str]) -> str | None:
    projectors = [n for n in names if is_projector(n) and n.lower().endswith(".gguf")]

    def rank(n: str) -> tuple[int, str]:
        label = normalize(detect_quantization(n) or "")
        return (_PROJECTOR_ORDER.index(label) if label in _PROJECTOR_ORDER else len(_PROJECTOR_ORDER), n)

    return min(projectors, key=rank) if projectors else None


def choose(names: Iterable[str], tag: str | None = None) -> Choice:
    """The files of a listing that ``tag`` (None: the default) means; NoMatch when there are none."""
    listing = list(names)
    weights = [n for n in listing if is_weight(n)]
    if not weights:
        if tag is not None:  # tags name GGUF quantizations; this repo has none
            raise NoMatch(tag.lower(), [])
        return Choice(None, tuple(listing), gguf=False)
    by_label: dict[str, list[str]] = {}
    for n in weights:
        label = detect_quantization(n)
        by_label.setdefault(normalize(label) if label else "", []).append(n)
    available = available_quantizations(weights)

    if tag is not None:
        wanted = normalize(tag)
        key = wanted if wanted in by_label else f"ud-{wanted}" if f"ud-{wanted}" in by_label else None
        if key is None or key == "":
            raise NoMatch(tag.lower(), available)
        defaulted = False
    else:
        known = [q for q in DEFAULT_ORDER if q in by_label]
        others = sorted(
            q for q in by_label if q and q not in DEFAULT_ORDER and q not in FULL_PRECISION and not _REPACK.search(q)
        )
        full = [q for q in FULL_PRECISION if q in by_label]
        # Untagged weights (a lone model.gguf) come before full precision: their type is unknown.
        candidates = [*known, *others, *([""] if "" in by_label else []), *full]
        if not candidates:
            raise NoMatch(None, available)
        key = candidates[0]
        defaulted = key != DEFAULT_QUANTIZATION
    chosen = sorted(by_label[key], key=_sort_key)
    label = detect_quantization(chosen[0])
    return Choice(label, tuple(chosen), _best_projector(listing), defaulted)
