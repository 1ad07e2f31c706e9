"""Command line for the tiny model: ``python -m agentd.inference.tiny_model DIR [--seed N]``."""

import sys

from agentd.inference._tiny_model import build_tiny_model, main

__all__ = ["build_tiny_model", "main"]

if __name__ == "__main__":
    sys.exit(main())
