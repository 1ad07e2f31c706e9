"""Identity: who speaks on the bus, proven by NATS, and what each identity may do there.

Credentials are nkeys (seeds in files of mode 0600 under the state directory; the server and
the book hold only public keys). Every identity has a NATS account of its own that imports only
its own subjects from the daemon's account (where the streams live), with allow lists inside
it, applied with a reload; control requests are signed by the operator's key. See
docs/identity.md.
"""

from agentd.identity._accounts import (
    DAEMON_ACCOUNT,
    Import,
    account_name,
    agent_imports,
    bootstrap_imports,
    operator_imports,
)
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
from agentd.identity._tls import (
    client_ssl_context,
    nats_tls_block,
    server_ssl_context,
    trusting_ssl_context,
)
from agentd.identity._tokens import MemoryTokenBook, TokenBook

__all__ = [
    # the book of issued identities and the server that enforces it
    "ROLES",
    "Identity",
    "IdentityBook",
    "ServerAuth",
    "bootstrap_credentials",
    # accounts: what each identity's NATS account imports from the daemon's
    "DAEMON_ACCOUNT",
    "Import",
    "account_name",
    "agent_imports",
    "bootstrap_imports",
    "operator_imports",
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
    "trusting_ssl_context",
]
