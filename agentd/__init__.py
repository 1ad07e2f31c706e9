"""agentd: an agent runtime and AgentOps supervisor daemon."""

__version__ = "0.1.0"
