"""``GET /serving/deployment/{id}/logs/patterns``: the failure patterns found in an engine's log.

The platform's answer (``ContainerLogPatternResponse``): every pattern it knows with whether it was
seen, and the lines that showed one. Informational only: a deployment's status comes from its
process, never from its log. The patterns are llama.cpp's own wording for each failure.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

LINES = 2000  # the end of the log that is read: a failure is near the end

_OOM = r"out of memory|failed to allocate|cannot allocate memory|std::bad_alloc|ggml_backend_\w*alloc\w* failed"
_LOAD = r"failed to load model|error loading model|llama_model_load: error|unable to load model"
_FILE = r"invalid magic|gguf_init_from_file\w*: failed|not a GGUF file|tensor .* data is not within"
PATTERNS: dict[str, re.Pattern[str]] = {
    "oom": re.compile(_OOM, re.I),
    "model_load_failure": re.compile(_LOAD, re.I),
    "invalid_model_file": re.compile(_FILE, re.I),
    "port_in_use": re.compile(r"address already in use|couldn't bind|failed to bind", re.I),
    "cuda_error": re.compile(r"CUDA error|cudaMalloc failed|no CUDA-capable device", re.I),
    "context_too_large": re.compile(r"n_ctx.*(exceeds|greater than)|context size .* too (large|big)", re.I),
    "crashed": re.compile(r"segmentation fault|core dumped|\babort(ed)?\b|terminate called", re.I),
}


def analyse(deployment_id: str, lines: list[str]) -> dict[str, Any]:
    seen = dict.fromkeys(PATTERNS, False)
    failures: list[dict[str, str]] = []
    for number, line in enumerate(lines, 1):
        for name, pattern in PATTERNS.items():
            if pattern.search(line):
                seen[name] = True
                failures.append({"pattern": name, "line": line.rstrip("\n")[:2000], "line_number": str(number)})
    return {
        "deployment_id": deployment_id,
        "patterns_detected": seen,
        "failure_lines": failures[-100:],
        "analysis_timestamp": datetime.now(timezone.utc).isoformat(),
    }
