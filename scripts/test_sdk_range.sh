#!/usr/bin/env bash
# The SDK-flow tests against the lowest and the newest kamiwaza-sdk that pyproject.toml allows.
# `make test` already ran everything with the version pip resolved; this adds the others.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
read -r LOWEST NEWEST < <("$PY" scripts/sdk_versions.py)
INSTALLED=$("$PY" -c "from importlib.metadata import version; print(version('kamiwaza-sdk'))")
echo "kamiwaza-sdk: lowest allowed $LOWEST, newest $NEWEST, installed $INSTALLED"
for v in $(printf '%s\n' "$LOWEST" "$NEWEST" | sort -u); do
  if [ "$v" = "$INSTALLED" ]; then
    echo "kamiwaza-sdk $v: covered by make test"
    continue
  fi
  "$PY" -m pip install --quiet "kamiwaza-sdk==$v"
  "$PY" -m pytest -q tests/test_sdk_models.py tests/test_serving.py tests/test_contract.py tests/test_auth.py tests/test_sdkimport.py
done
"$PY" -m pip install --quiet "kamiwaza-sdk==$INSTALLED"
