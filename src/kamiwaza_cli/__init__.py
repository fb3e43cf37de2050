"""The ``kamiwaza`` command line: pull, serve and chat with models on a laptop or a cluster."""

__version__ = "0.1.0"
