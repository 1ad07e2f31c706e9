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
from agentd.config._checkpoints import CheckpointsConfig
from agentd.config._load import DEFAULT_CONFIG_NAME, LoadedConfig, find_config, load_config
from agentd.config._models import (
    AgentsConfig,
    AutoscaleConfig,
    BusConfig,
    ClusterConfig,
    Config,
    DaemonConfig,
    EmbeddedNatsConfig,
    GatewayConfig,
    IdentityConfig,
    InboxConfig,
    LauncherConfig,
    MetricsConfig,
    ModelLivenessConfig,
    ModelPoolConfig,
    OtlpConfig,
    PolicyConfig,
    PoolAutoscaleConfig,
    PoolReplicasConfig,
    TlsConfig,
    ToolsConfig,
    TraceConfig,
    WitnessConfig,
)

__all__ = [
    # agentd.toml
    "DEFAULT_CONFIG_NAME",
    "AgentsConfig",
    "AutoscaleConfig",
    "BusConfig",
    "ClusterConfig",
    "Config",
    "DaemonConfig",
    "EmbeddedNatsConfig",
    "IdentityConfig",
    "InboxConfig",
    "LauncherConfig",
    "LoadedConfig",
    "MetricsConfig",
    "OtlpConfig",
    "ModelLivenessConfig",
    "ModelPoolConfig",
    "PolicyConfig",
    "PoolAutoscaleConfig",
    "PoolReplicasConfig",
    "TlsConfig",
    "GatewayConfig",
    "ToolsConfig",
    "TraceConfig",
    "WitnessConfig",
    "CheckpointsConfig",
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
