"""The daemon: lifecycle, state directory, systemd integration and the agent fleet.

Nothing imports this package except the CLI.
"""

from agentd.daemon._daemon import Daemon, run_daemon
from agentd.daemon._fleet import AgentFleet
from agentd.daemon._statedir import StateDirLock
from agentd.daemon._systemd import SystemdNotifier

__all__ = ["AgentFleet", "Daemon", "StateDirLock", "SystemdNotifier", "run_daemon"]
