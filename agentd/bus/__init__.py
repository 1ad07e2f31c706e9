"""The message bus: NATS connections, subjects, envelopes, JetStream streams, embedded server.

Services may import this package; it imports only config and errors.
"""

from typing import TYPE_CHECKING

from agentd._lazy import lazy_attributes
from agentd.bus._connect import connect
from agentd.bus._credentials import Credentials, write_private
from agentd.bus._embedded import (
    embedded_url,
    nats_server_argv,
    nats_server_binary,
    nats_server_config,
    wait_until_listening,
)
from agentd.bus._jetstream import jetstream
from agentd.bus._json import MAX_JSON_DEPTH, BoundedJSONError, json_depth, loads_bounded
from agentd.bus._kv_mirror import mirror_bucket
from agentd.bus._serve import serve_each
from agentd.bus._streams import (
    ensure_inbox_consumer,
    ensure_streams,
    ensure_trace_consumer,
    ensure_trace_stream,
)
from agentd.bus._subjects import Subjects

if TYPE_CHECKING:
    from agentd.bus._message import Message, RunResult, jsonable, new_id
else:  # pydantic models, imported when first used: agentctl's status, ps and send never are
    __getattr__ = lazy_attributes(
        __name__, {"agentd.bus._message": ("Message", "RunResult", "jsonable", "new_id")}
    )

__all__ = [
    "mirror_bucket",
    # connections and services
    "connect",
    "Credentials",
    "serve_each",
    "Subjects",
    "write_private",
    # envelopes
    "BoundedJSONError",
    "MAX_JSON_DEPTH",
    "json_depth",
    "loads_bounded",
    "Message",
    "RunResult",
    "jsonable",
    "new_id",
    # JetStream
    "jetstream",
    "ensure_inbox_consumer",
    "ensure_streams",
    "ensure_trace_consumer",
    "ensure_trace_stream",
    # embedded nats-server
    "embedded_url",
    "nats_server_argv",
    "nats_server_binary",
    "nats_server_config",
    "wait_until_listening",
]
