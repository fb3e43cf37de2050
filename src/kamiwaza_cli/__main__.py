"""``python -m kamiwaza_cli``: the same as the ``kamiwaza`` command."""

from .cli.main import main

main()
