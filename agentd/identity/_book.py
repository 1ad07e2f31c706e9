"""The identity book: every identity the daemon has issued, and the server's users made from it.

Spawned agents, operators and registered external agents each get an nkey; the book keeps
their public keys (the seeds live only in credentials files, mode 0600, or with the external
agent that made its own key) and renders nats-server's `authorization` block from them. The
book is state only: agentd.identity's `ServerAuth` applies it to a running server.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentd.bus import Credentials, Subjects, write_private
from agentd.errors import ControlError
from agentd.identity._accounts import (
    Import,
    account_name,
    agent_imports,
    bootstrap_imports,
    operator_imports,
    render_accounts,
)
from agentd.identity._keys import new_user_seed, public_key_of, valid_public_key
from agentd.identity._permissions import (
    BOOTSTRAP_INBOX_PREFIX,
    Permissions,
    agent_inbox_prefix,
    agent_permissions,
    bootstrap_permissions,
    operator_inbox_prefix,
    operator_permissions,
    probe_permissions,
)

__all__ = ["ROLES", "Identity", "IdentityBook"]

ROLES = ("admin", "operator", "viewer")
DAEMON = "daemon"


@dataclass
class Identity:
    """One issued identity. `identity` is `agent:<name>` or `operator:<name>`."""

    identity: str
    public_key: str
    issued_at: float = field(default_factory=time.time)
    role: str | None = None
    external: bool = False
    lease_until: float | None = None
    spec: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return self.identity.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.identity.split(":", 1)[1]

    def permissions(self, subjects: Subjects) -> Permissions:
        if self.kind == "operator":
            return operator_permissions(subjects, self.name)
        return agent_permissions(subjects, self.name, external=self.external)

    def imports(self, subjects: Subjects) -> list[Import]:
        if self.kind == "operator":
            return operator_imports(subjects)
        return agent_imports(subjects, self.name, external=self.external)


class IdentityBook:
    """Issued identities under `<state_dir>`: `identity/book.json` and `credentials/`."""

    def __init__(self, state_dir: Path, subjects: Subjects, bootstrap_token_file: Path) -> None:
        self.state_dir = state_dir
        self.subjects = subjects
        self.credentials_dir = state_dir / "credentials"
        self._path = state_dir / "identity" / "book.json"
        self._token_file = (
            bootstrap_token_file
            if bootstrap_token_file.is_absolute()
            else state_dir / bootstrap_token_file
        )
        self.identities: dict[str, Identity] = {}
        self.probe_password = fresh_password()
        self._load()
        self.daemon = self._ensure_daemon()
        self.bootstrap_token = self._ensure_bootstrap_token()

    # files
    def _load(self) -> None:
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return
        for entry in raw.get("identities", []):
            ident = Identity(**entry)
            self.identities[ident.identity] = ident

    def save(self) -> None:
        body = {"identities": [asdict(i) for i in self.identities.values()]}
        write_private(self._path, json.dumps(body, indent=2) + "\n")

    def _ensure_daemon(self) -> Credentials:
        path = self.credentials_dir / "daemon.creds"
        if path.exists():
            return Credentials.load(path)
        creds = Credentials(identity=DAEMON, nkey_seed=new_user_seed())
        creds.write(path)
        return creds

    def _ensure_bootstrap_token(self) -> str:
        try:
            token = self._token_file.read_text().strip()
        except FileNotFoundError:
            token = ""
        if not token:
            token = secrets.token_urlsafe(32)
            write_private(self._token_file, token + "\n")
        return token

    @property
    def bootstrap_token_file(self) -> Path:
        return self._token_file

    def creds_path(self, identity: str) -> Path:
        kind, name = identity.split(":", 1)
        return self.credentials_dir / f"{kind}s" / f"{name}.creds"

    # issuing
    def issue_operator(self, name: str, role: str | None) -> Path:
        """Credentials for operator `name` with `role` (None: roles from policy.csv only).
        Re-issuing replaces the key: the old file stops working at the next apply."""
        _check_name(name, "operator")
        if role is not None and role not in ROLES:
            raise ControlError("bad_request", f"role must be one of {list(ROLES)}, not {role!r}")
        identity = f"operator:{name}"
        seed = new_user_seed()
        self.identities[identity] = Identity(identity, public_key_of(seed), role=role)
        creds = Credentials(
            identity=identity, nkey_seed=seed, inbox_prefix=operator_inbox_prefix(name), role=role
        )
        path = creds.write(self.creds_path(identity))
        self.save()
        return path

    def ensure_operator(self, name: str, role: str | None) -> Path:
        """The operator's credentials file, issued once (the default admin, `local`)."""
        identity = f"operator:{name}"
        path = self.creds_path(identity)
        known = self.identities.get(identity)
        if known is not None and path.exists():
            creds = Credentials.load(path)
            if creds.nkey_seed and public_key_of(creds.nkey_seed) == known.public_key:
                return path
        return self.issue_operator(name, role)

    def ensure_agent(self, name: str) -> tuple[Credentials, bool]:
        """A spawned agent's credentials (all its replicas share them), and whether they are
        new (the server must learn them before a replica connects)."""
        identity = f"agent:{name}"
        path = self.creds_path(identity)
        known = self.identities.get(identity)
        if known is not None and not known.external and path.exists():
            creds = Credentials.load(path)
            if creds.nkey_seed and public_key_of(creds.nkey_seed) == known.public_key:
                return creds, False
        seed = new_user_seed()
        self.identities[identity] = Identity(identity, public_key_of(seed))
        creds = Credentials(
            identity=identity, nkey_seed=seed, inbox_prefix=agent_inbox_prefix(name)
        )
        creds.write(path)
        self.save()
        return creds, True

    def issue_external(self, name: str) -> Path:
        """Pre-authorize external agent `name`: a credentials file an operator hands over; the
        agent then registers on `api.register.<name>` without the bootstrap token."""
        _check_name(name, "agent")
        identity = f"agent:{name}"
        if identity in self.identities and not self.identities[identity].external:
            raise ControlError("name_taken", f"{name!r} is a spawned agent's name")
        seed = new_user_seed()
        self.identities[identity] = Identity(identity, public_key_of(seed), external=True)
        creds = Credentials(
            identity=identity, nkey_seed=seed, inbox_prefix=agent_inbox_prefix(name)
        )
        path = creds.write(self.creds_path(identity))
        self.save()
        return path

    def register_external(
        self, name: str, public_key: str | None, spec: dict[str, Any], lease_until: float
    ) -> Identity:
        """Record a registration: with `public_key` (bootstrap path) a new identity for that
        key; without (pre-authorized), the identity already issued to `name`.

        A name is protected for as long as it is issued, leased or not: the bootstrap path may
        not take a pre-authorized name (or one registered with another key) with a new key."""
        _check_name(name, "agent")
        identity = f"agent:{name}"
        known = self.identities.get(identity)
        if known is not None and not known.external:
            raise ControlError("name_taken", f"{name!r} is a spawned agent's name")
        if public_key is not None:
            if not valid_public_key(public_key):
                raise ControlError("bad_request", "public_key is not a NATS user public key (U...)")
            if known is not None and known.public_key != public_key:
                how = (
                    "registered" if known.lease_until else "pre-authorized (agentctl agents issue)"
                )
                raise ControlError(
                    "name_taken",
                    f"{name!r} is {how} with another key: only that key may register it",
                )
            if known is None:
                known = Identity(identity, public_key, external=True)
                self.identities[identity] = known
        elif known is None:
            raise ControlError("unknown_identity", f"{name!r} was not pre-authorized")
        known.spec = spec
        known.lease_until = lease_until
        self.save()
        return known

    def revoke(self, identity: str) -> Identity | None:
        """Forget an identity: its key stops working at the next apply; its file is removed."""
        gone = self.identities.pop(identity, None)
        if gone is not None:
            self.creds_path(identity).unlink(missing_ok=True)
            self.save()
        return gone

    # lookups
    def by_key(self, public_key: str) -> Identity | None:
        for ident in self.identities.values():
            if ident.public_key == public_key:
                return ident
        return None

    def external(self) -> list[Identity]:
        return [i for i in self.identities.values() if i.external and i.lease_until is not None]

    # the server's view
    def account_names(self) -> frozenset[str]:
        """Every account the server's config has besides the daemon's."""
        names = {account_name(i) for i in self.identities}
        return frozenset(names | {account_name("bootstrap"), account_name("probe")})

    def render_authorization(self) -> str:
        """nats-server's `accounts` block (agentd.identity._accounts): the daemon in `AGENTD`
        with full rights and the streams, every identity in an account of its own with its
        imports and permissions, the bootstrap user, and the reload probe (no rights)."""
        accounts: list[tuple[str, list[str], list[Import]]] = []
        for ident in sorted(self.identities.values(), key=lambda i: i.identity):
            user = (
                f'{{nkey: "{ident.public_key}", '
                f"permissions: {ident.permissions(self.subjects).render()}}}"
            )
            accounts.append((account_name(ident.identity), [user], ident.imports(self.subjects)))
        bootstrap = (
            f'{{user: "bootstrap", password: {json.dumps(self.bootstrap_token)}, '
            f"permissions: {bootstrap_permissions(self.subjects).render()}}}"
        )
        accounts.append((account_name("bootstrap"), [bootstrap], bootstrap_imports(self.subjects)))
        probe = (
            f'{{user: "probe", password: {json.dumps(self.probe_password)}, '
            f"permissions: {probe_permissions().render()}}}"
        )
        accounts.append((account_name("probe"), [probe], []))
        daemon = f'{{nkey: "{public_key_of(self.daemon.nkey_seed or "")}"}}'
        return render_accounts(daemon, accounts)


def _check_name(name: str, kind: str) -> None:
    # here, not at the top: importing the config models would cost every agentctl start
    from agentd.config import IDENTITY_NAME, reserved_name_problem

    if not IDENTITY_NAME.match(name):
        raise ControlError(
            "bad_request",
            f"{kind} name {name!r} must be lowercase letters, digits, _ and - (up to 63)",
        )
    problem = reserved_name_problem(name) if kind == "agent" else None
    if problem is not None:
        raise ControlError("reserved_name", f"agent name {problem}")


def fresh_password() -> str:
    """A new random password for the server's `probe` user (one per config written)."""
    return secrets.token_urlsafe(18)


def bootstrap_credentials(token: str) -> Credentials:
    """What a client connects as to register with the bootstrap token (`agentd.api`)."""
    return Credentials(
        identity="bootstrap", user="bootstrap", password=token, inbox_prefix=BOOTSTRAP_INBOX_PREFIX
    )
