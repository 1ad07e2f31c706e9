"""Command-line entry points: `agentd` (daemon, admin) and `agentctl` (operator console)."""
