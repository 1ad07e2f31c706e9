"""Fails at import, every time."""

raise RuntimeError("this agent is broken on purpose")
