"""Chat with a deployed model: the interactive REPL (``repl.py``) and one-shot generation (``oneshot.py``).

Both share ``session.py``: the conversation, its parameters, streaming one reply
with timings, and JSON transcripts. Nothing here knows which platform serves the
model; it gets an OpenAI client and a way to get a new one when the endpoint dies.
"""
