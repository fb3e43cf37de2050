"""Benchmarks of the kamiwaza CLI and its local server: ``make bench`` runs them and renders docs/benchmarks.md."""
