"""The embedded local server: a single-node Kamiwaza platform (SQLite catalog, real downloads).

It speaks the subset of the Kamiwaza REST API that the SDK and the CLI use, with the
same paths and JSON shapes, so the CLI never knows which kind of platform it talks to.
Nothing here imports ``kamiwaza_cli.cli`` or ``kamiwaza_cli.chat``.
"""
