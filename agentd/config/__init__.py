"""Configuration: agentd.toml and agent specs, as frozen, validated models.

Anything in agentd may import this package.
"""

from agentd.config._agent_spec import (
    AgentSpec,
    LoadedAgent,
    ReplicaBounds,
    RestartSpec,
    agent_version,
    load_agent,
    load_agents,
)
from agentd.config._load import DEFAULT_CONFIG_NAME, LoadedConfig, find_config, load_config
from agentd.config._models import (
    AgentsConfig,
    AutoscaleConfig,
    BusConfig,
    Config,
    DaemonConfig,
    EmbeddedNatsConfig,
    GatewayConfig,
    InboxConfig,
    PolicyConfig,
    ToolsConfig,
    TraceConfig,
)

__all__ = [
    # agentd.toml
    "DEFAULT_CONFIG_NAME",
    "AgentsConfig",
    "AutoscaleConfig",
    "BusConfig",
    "Config",
    "DaemonConfig",
    "EmbeddedNatsConfig",
    "InboxConfig",
    "LoadedConfig",
    "PolicyConfig",
    "GatewayConfig",
    "ToolsConfig",
    "TraceConfig",
    "find_config",
    "load_config",
    # agent specs
    "AgentSpec",
    "LoadedAgent",
    "ReplicaBounds",
    "RestartSpec",
    "agent_version",
    "load_agent",
    "load_agents",
]
