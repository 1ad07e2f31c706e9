"""Every NATS subject agentd uses, derived from one configurable prefix (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Subjects"]


@dataclass(frozen=True)
class Subjects:
    """Subject names under `prefix` (default `agentd`)."""

    prefix: str = "agentd"

    # control plane: operators -> daemon, request/reply
    def ctl(self, verb: str) -> str:
        return f"{self.prefix}.ctl.{verb}"

    @property
    def ctl_all(self) -> str:
        return f"{self.prefix}.ctl.>"

    # messages: agent <from> -> router -> inbox of <to>
    def out(self, sender: str, to: str) -> str:
        return f"{self.prefix}.out.{sender}.{to}"

    @property
    def out_all(self) -> str:
        return f"{self.prefix}.out.*.*"

    def inbox(self, agent: str) -> str:
        return f"{self.prefix}.in.{agent}"

    @property
    def inbox_all(self) -> str:
        return f"{self.prefix}.in.>"

    def dead_letter(self, agent: str) -> str:
        return f"{self.prefix}.dlq.{agent}"

    @property
    def dead_letter_all(self) -> str:
        return f"{self.prefix}.dlq.>"

    # a replica gives up on one of its inbox messages: the daemon copies it into the dead-letter
    # stream (request/reply); only the daemon writes `dlq`
    def dead_letter_request(self, agent: str) -> str:
        return f"{self.prefix}.dead.{agent}"

    @property
    def dead_letter_request_all(self) -> str:
        return f"{self.prefix}.dead.*"

    # replies to a sender that asked for one (ask, send --wait)
    def reply(self, owner: str, token: str) -> str:
        return f"{self.prefix}.reply.{owner}.{token}"

    @property
    def reply_all(self) -> str:
        return f"{self.prefix}.reply.>"

    # the owner token of operators' replies (`agentctl send --wait`)
    operator_reply_owner = "ctl"

    def delivered(self, owner: str, token: str) -> str:
        """Where the daemon relays a reply to `owner` (with NATS accounts, a reply published
        in the answerer's account reaches the asker's account only through the daemon)."""
        return f"{self.prefix}.deliver.{owner}.{token}"

    # replica liveness: core NATS, not stored
    def heartbeat(self, agent: str) -> str:
        return f"{self.prefix}.hb.{agent}"

    @property
    def heartbeat_all(self) -> str:
        return f"{self.prefix}.hb.*"

    # daemon -> an agent's replicas: pause / resume taking work (core NATS)
    def command(self, agent: str) -> str:
        return f"{self.prefix}.cmd.{agent}"

    # an agent asks the daemon for an instance of another agent (request/reply)
    def spawn(self, agent: str) -> str:
        return f"{self.prefix}.spawn.{agent}"

    def tool(self, agent: str, tool: str) -> str:
        return f"{self.prefix}.tool.{agent}.{tool}"

    @property
    def tool_all(self) -> str:
        # tool names contain dots (loan.approve): everything after the agent is the tool
        return f"{self.prefix}.tool.*.>"

    # an agent asks for its catalog: the tools its spec lists, with names, descriptions and
    # JSON schemas (request/reply; only under its own name)
    def tool_catalog(self, agent: str) -> str:
        return f"{self.prefix}.tools.{agent}"

    @property
    def tool_catalog_all(self) -> str:
        return f"{self.prefix}.tools.*"

    @property
    def tokens_bucket(self) -> str:
        """Key-value bucket of outside LLM-gateway tokens (digests only; the daemon's only)."""
        return f"{self.prefix.replace('.', '_')}_tokens"

    @property
    def tool_results_bucket(self) -> str:
        """Key-value bucket of tool results by idempotency key: no second side effect."""
        return f"{self.prefix.replace('.', '_')}_tool_results"

    @property
    def taint_bucket(self) -> str:
        """Key-value bucket of tainted conversations, messages and agents (the daemon's only)."""
        return f"{self.prefix.replace('.', '_')}_taint"

    @property
    def budgets_bucket(self) -> str:
        """Key-value bucket of the LLM gateway's token buckets (limits.toml model limits; the
        daemon's only): kept across restarts, shared by a cluster's hosts."""
        return f"{self.prefix.replace('.', '_')}_budgets"

    def trace(self, agent: str) -> str:
        return f"{self.prefix}.trace.{agent}"

    @property
    def trace_all(self) -> str:
        return f"{self.prefix}.trace.*"

    def event(self, kind: str) -> str:
        return f"{self.prefix}.evt.{kind}"

    # JetStream names (no dots allowed in stream or consumer names)
    @property
    def inbox_stream(self) -> str:
        return f"{self.prefix.replace('.', '_').upper()}_INBOX"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.prefix.replace('.', '_').upper()}_DLQ"

    @property
    def trace_stream(self) -> str:
        """Decision records from workers, waiting for the daemon to write them to the log."""
        return f"{self.prefix.replace('.', '_').upper()}_TRACE"

    @property
    def trace_consumer(self) -> str:
        return "trace-ingest"

    @property
    def nodes_bucket(self) -> str:
        """Key-value bucket of cluster members: one key per host, its capacity, under a TTL."""
        return f"{self.prefix.replace('.', '_')}_nodes"

    @property
    def placer_bucket(self) -> str:
        """Key-value bucket holding the placer lease (one key, under a TTL)."""
        return f"{self.prefix.replace('.', '_')}_placer"

    @property
    def placement_bucket(self) -> str:
        """Key-value bucket of the cluster's placement and the operators' desired counts."""
        return f"{self.prefix.replace('.', '_')}_placement"

    @property
    def runs_bucket(self) -> str:
        """Key-value bucket of finished runs by message id: a redelivery does not run again."""
        return f"{self.prefix.replace('.', '_')}_runs"

    @property
    def log_anchor_bucket(self) -> str:
        """Key-value bucket of the decision log's last published checkpoint, one key per host
        (with history): the anchor outside the log file."""
        return f"{self.prefix.replace('.', '_')}_log_anchor"

    @property
    def witness_stream(self) -> str:
        """Stream of the decision logs' signed checkpoints ([trace.witness].stream)."""
        return f"{self.prefix.replace('.', '_').upper()}_WITNESS"

    def witness(self, node: str) -> str:
        return f"{self.prefix}.witness.{node}"

    def inbox_consumer(self, agent: str) -> str:
        return f"inbox-{agent}"
