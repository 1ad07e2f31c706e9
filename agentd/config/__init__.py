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
from agentd.config._langgraph_project import ProjectImport, import_project, read_project
from agentd.config._load import DEFAULT_CONFIG_NAME, LoadedConfig, find_config, load_config
from agentd.config._mcp import McpServerConfig
from agentd.config._mcp_endpoint import McpEndpointConfig, split_listen
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
    ToolOverride,
    ToolsConfig,
    TraceConfig,
    WitnessConfig,
)
from agentd.config._names import (
    EXTERNAL_SUBJECT_PREFIX,
    IDENTITY_NAME,
    RESERVED_NAMES,
    TOOL_NAME,
    external_subject,
    reserved_name_problem,
)
from agentd.config._sandbox import AgentSandboxSpec, SandboxConfig, SandboxLimits

__all__ = [
    # names
    "IDENTITY_NAME",
    "TOOL_NAME",
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
    "McpEndpointConfig",
    "MetricsConfig",
    "OtlpConfig",
    "ModelLivenessConfig",
    "ModelPoolConfig",
    "PolicyConfig",
    "PoolAutoscaleConfig",
    "PoolReplicasConfig",
    "TlsConfig",
    "GatewayConfig",
    "McpServerConfig",
    "ToolOverride",
    "ToolsConfig",
    "TraceConfig",
    "WitnessConfig",
    "CheckpointsConfig",
    "SandboxConfig",
    "SandboxLimits",
    "AgentSandboxSpec",
    "find_config",
    "split_listen",
    "load_config",
    # agent specs
    "EXTERNAL_SUBJECT_PREFIX",
    "RESERVED_NAMES",
    "external_subject",
    "reserved_name_problem",
    "AgentSpec",
    "LoadedAgent",
    "ReplicaBounds",
    "RestartSpec",
    "agent_version",
    "import_project",
    "read_project",
    "ProjectImport",
    "load_agent",
    "load_agents",
]
