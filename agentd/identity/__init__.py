"""Identity: who speaks on the bus, proven by NATS, and what each identity may do there.

Credentials are nkeys (seeds in files of mode 0600 under the state directory; the server and
the book hold only public keys), permissions are per-identity allow lists in the embedded
server's config, applied with a reload; control requests are signed by the operator's key.
See docs/identity.md.
"""

from agentd.identity._book import ROLES, Identity, IdentityBook, bootstrap_credentials
from agentd.identity._keys import new_user_seed, public_key_of, sign, valid_public_key, verify
from agentd.identity._permissions import (
    BOOTSTRAP_INBOX_PREFIX,
    Permissions,
    agent_inbox_prefix,
    agent_permissions,
    bootstrap_permissions,
    operator_inbox_prefix,
    operator_permissions,
)
from agentd.identity._server import ServerAuth
from agentd.identity._signing import (
    AUTH_HEADER,
    MAX_SKEW_S,
    NonceCache,
    Speaker,
    sign_request,
    verify_request,
)
from agentd.identity._tls import client_ssl_context, nats_tls_block, server_ssl_context
from agentd.identity._tokens import MemoryTokenBook, TokenBook

__all__ = [
    # the book of issued identities and the server that enforces it
    "ROLES",
    "Identity",
    "IdentityBook",
    "ServerAuth",
    "bootstrap_credentials",
    # permissions
    "BOOTSTRAP_INBOX_PREFIX",
    "Permissions",
    "agent_inbox_prefix",
    "agent_permissions",
    "bootstrap_permissions",
    "operator_inbox_prefix",
    "operator_permissions",
    # keys and signed control requests
    "AUTH_HEADER",
    "MAX_SKEW_S",
    "Speaker",
    "new_user_seed",
    "public_key_of",
    "sign",
    "sign_request",
    "valid_public_key",
    "verify",
    "verify_request",
    "NonceCache",
    # LLM-gateway tokens
    "MemoryTokenBook",
    "TokenBook",
    # TLS
    "client_ssl_context",
    "nats_tls_block",
    "server_ssl_context",
]
