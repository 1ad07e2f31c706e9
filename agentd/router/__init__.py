"""The router: policy-checked delivery of messages into agents' JetStream inboxes."""

from agentd.router._dead_letters import DeadLetters
from agentd.router._policy_hook import AllowAll, HookDecision, PolicyHook
from agentd.router._replies import ReplyRelay
from agentd.router._router import Routed, Router

__all__ = [
    "AllowAll",
    "DeadLetters",
    "HookDecision",
    "PolicyHook",
    "ReplyRelay",
    "Routed",
    "Router",
]
