"""click commands: parse flags, call workflows, render. ``main.py`` is the only error boundary."""
