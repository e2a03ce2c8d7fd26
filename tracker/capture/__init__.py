"""Capture: hooks that take references (watch.py), a worker that summarizes them (engine.py)."""
