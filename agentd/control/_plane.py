"""The control plane: one NATS service answering `agentd.ctl.<verb>` for operators."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentd.bus import Subjects, serve_each
from agentd.control._protocol import ControlRequest, decode_request, encode_error, encode_ok
from agentd.errors import AgentdError, ControlError

__all__ = ["Authenticator", "Authorizer", "ControlPlane", "Handler"]

log = logging.getLogger("agentd.control")

Handler = Callable[[ControlRequest], Awaitable[Any]]
# raises ControlError("forbidden", ...) when `operator` may not use `verb`
Authorizer = Callable[[str, str], object]
# (subject, body, headers) -> the operator who sent the request, proven (see agentd.identity);
# raises ControlError("unauthenticated", ...) when it cannot be proven
Authenticator = Callable[[str, bytes, dict[str, str] | None], str]


class ControlPlane:
    """Dispatches control requests to registered verb handlers.

    Every request gets exactly one reply: the handler's result, or a structured error (malformed
    request, unknown verb with the list of verbs, a handler's AgentdError). An unexpected exception
    in a handler becomes an `internal` error reply; the service keeps serving.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        authorize: Authorizer | None = None,
        authenticate: Authenticator | None = None,
        queue: str = "",
    ) -> None:
        self._nc = nc
        # in a cluster every host serves the verbs in one queue group: one host answers each
        self._queue = queue
        self._subjects = subjects
        self._authorize = authorize
        self._authenticate = authenticate
        self._handlers: dict[str, Handler] = {}
        self._stopped = anyio.Event()

    def register(self, verb: str, handler: Handler) -> None:
        self._handlers[verb] = handler

    @property
    def verbs(self) -> list[str]:
        return sorted(self._handlers)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # each request in its own task, so a slow verb does not hold up `status`
        async with serve_each(self._nc, self._subjects.ctl_all, self._answer, queue=self._queue):
            task_status.started()
            await self._stopped.wait()

    async def shutdown(self) -> None:
        self._stopped.set()

    async def _answer(self, msg: Msg) -> None:
        verb = msg.subject[len(self._subjects.ctl("")) :]
        try:
            reply = encode_ok(await self._dispatch(verb, msg.data, msg.subject, msg.headers))
        except ControlError as exc:
            reply = encode_error(exc)
        except AgentdError as exc:
            reply = encode_error(ControlError(type(exc).__name__, str(exc)))
        except Exception as exc:
            log.exception("control verb %s failed", verb)
            reply = encode_error(ControlError("internal", f"{type(exc).__name__}: {exc}"))
        if msg.reply:
            try:
                await msg.respond(reply)
            except Exception:
                log.warning("could not reply to %s on %s", verb, msg.reply)

    async def _dispatch(
        self, verb: str, data: bytes, subject: str = "", headers: dict[str, str] | None = None
    ) -> Any:
        handler = self._handlers.get(verb)
        if handler is None:
            raise ControlError("unknown_verb", f"unknown control verb {verb!r}", verbs=self.verbs)
        request = decode_request(data)
        if self._authenticate is not None:
            # who speaks is proven by a signature, not by the request's `operator` field
            speaker = self._authenticate(subject, data, headers)
            request = request.model_copy(update={"operator": speaker})
        log.debug("ctl %s by %s", verb, request.operator)
        if self._authorize is not None:
            self._authorize(request.operator, verb)
        return await handler(request)
