"""Who may do what: roles from `config/roles.yaml`, keyed by e-mail.

    roles:                       # what each role may do, and on which accounts
      csm:     { can: [act, dismiss, retry], scope: own }
      manager: { can: [act, dismiss, retry, approve], scope: team }
      ops:     { can: [retry, sync], scope: all }
      leadership: { can: [], scope: all }
    users:
      carlos.mendes@example.com:
        name: Carlos Mendes
        roles: [csm]
        manager: maria.garcia@example.com
        owner: Carlos Mendes       # the name in accounts.owner
    local_user: { email: local@localhost, name: Local user, roles: [csm] }

Permissions: `act` (create an action), `dismiss` (document why not), `approve` (approve
or reject an action waiting for approval), `retry` (push a failed action again), `sync`
(run the outbox for everyone). Scope: `own` (accounts whose owner is the user), `team`
(the user's and every direct or indirect report's accounts), `all`.

Checks raise `PermissionDenied` with a sentence saying what is missing; the engine
(`health.actions`) calls them, so hiding a button is never the only guard.

When the app runs without authentication (no `st.login`), everyone is the `local_user`;
its roles are whatever roles.yaml gives it (the `local` role by default: act, dismiss,
retry and sync on every account, but not approve). With `local_user.impersonate: true`
the app may offer an "act as" picker over the users listed here (demo mode), which is
how approvals are shown without a login. Never both impersonation and real auth: with
auth on, `act_as` is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationError

from health.model import Strict
from health.yaml_config import EMAIL, ConfigError, did_you_mean, parse_yaml, plain, read_text

PERMISSIONS: tuple[str, ...] = ("act", "dismiss", "approve", "retry", "sync")
SCOPES: tuple[str, ...] = ("own", "team", "all")
BUILTIN_ROLES: tuple[str, ...] = ("csm", "manager", "ops", "leadership")
_SCOPE_RANK = {s: i for i, s in enumerate(SCOPES)}


class PermissionDenied(PermissionError):
    """The user may not do this; the message says why and who may."""


class RoleDef(Strict):
    label: str | None = None
    can: list[Literal["act", "dismiss", "approve", "retry", "sync"]] = Field(default_factory=list)
    scope: Literal["own", "team", "all"] = "own"


class UserDef(Strict):
    name: str
    roles: list[str] = Field(default_factory=list)
    manager: str | None = None
    owner: str | None = None


class LocalUser(Strict):
    email: str = "local@localhost"
    name: str = "Local user"
    roles: list[str] = Field(default_factory=lambda: ["csm"])
    owner: str | None = None
    manager: str | None = None
    impersonate: bool = False
    """With auth off, may the app let the visitor pick who they act as (demo mode)?"""


class RolesFile(Strict):
    version: int | str | None = None
    description: str | None = None
    roles: dict[str, RoleDef]
    users: dict[str, UserDef] = Field(default_factory=dict)
    local_user: LocalUser = Field(default_factory=LocalUser)
    allow_self_approval: bool = False


@dataclass(frozen=True)
class User:
    """A resolved user: roles, and the owners of the accounts in their team."""

    email: str
    name: str
    roles: tuple[str, ...]
    manager: str | None = None
    owner: str | None = None
    grants: Mapping[str, str] = field(default_factory=dict)
    """permission -> the widest scope any of the user's roles grants it with."""
    team: frozenset[str] = frozenset()
    """Owner names and e-mails of the user's direct and indirect reports."""
    is_local: bool = False
    known: bool = True
    """False for a signed-in e-mail that roles.yaml does not list (no permissions)."""

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def label(self) -> str:
        roles = ", ".join(self.roles) or "no role"
        return f"{self.name} ({roles})"


def _owns(user: User, account: Mapping[str, Any] | None) -> bool:
    if account is None:
        return False
    owner = account.get("owner")
    owner_email = (account.get("owner_email") or "").lower()
    return (user.owner is not None and owner == user.owner) or (bool(owner_email) and owner_email == user.email)


def _in_team(user: User, account: Mapping[str, Any] | None) -> bool:
    if account is None:
        return False
    owner = account.get("owner")
    owner_email = (account.get("owner_email") or "").lower()
    return owner in user.team or (bool(owner_email) and owner_email in user.team)


def covers(user: User, scope: str, account: Mapping[str, Any] | None) -> bool:
    """Whether `scope` (own / team / all) reaches `account` for `user`."""
    if scope == "all":
        return True
    if account is None:
        return False
    if scope == "team":
        return _owns(user, account) or _in_team(user, account)
    return _owns(user, account)


def allowed(user: User, permission: str, account: Mapping[str, Any] | None = None) -> bool:
    """May `user` do `permission` (on `account`, when the permission is per account)?"""
    scope = user.grants.get(permission)
    if scope is None:
        return False
    return account is None or covers(user, scope, account)


def _account_words(account: Mapping[str, Any] | None) -> str:
    if not account:
        return ""
    name = account.get("name") or account.get("account_id")
    owner = account.get("owner")
    return f" on {name}" + (f" (owned by {owner})" if owner else "")


def require(user: User, permission: str, account: Mapping[str, Any] | None = None) -> None:
    """Raise `PermissionDenied` unless `user` may do `permission` (on `account`)."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; use one of {', '.join(PERMISSIONS)}")
    if allowed(user, permission, account):
        return
    if not user.known:
        raise PermissionDenied(
            f"{user.email} is not listed in config/roles.yaml, so they may not {permission}; "
            "add them under `users:` with a role"
        )
    scope = user.grants.get(permission)
    if scope is None:
        raise PermissionDenied(
            f"{user.label} may not {permission}: none of their roles grants it (see config/roles.yaml)"
        )
    raise PermissionDenied(
        f"{user.label} may {permission} only on {'their own' if scope == 'own' else 'their team' + chr(39) + 's'} "
        f"accounts, not{_account_words(account)}"
    )


class Roles:
    """The loaded roles.yaml: look users up by e-mail, check permissions."""

    def __init__(self, spec: RolesFile, path: str = "config/roles.yaml"):
        self.spec = spec
        self.path = path
        self._users = {email.lower(): u for email, u in spec.users.items()}

    # -- who --------------------------------------------------------------------------
    def _reports(self, email: str) -> set[str]:
        """E-mails of everyone below `email`, transitively (cycles are ignored)."""
        out: set[str] = set()
        frontier = [email]
        while frontier:
            boss = frontier.pop()
            for e, u in self._users.items():
                if u.manager and u.manager.lower() == boss and e not in out and e != email:
                    out.add(e)
                    frontier.append(e)
        return out

    def _resolve(self, email: str, name: str, roles: list[str], manager: str | None, owner: str | None,
                 *, is_local: bool = False, known: bool = True) -> User:
        grants: dict[str, str] = {}
        for r in roles:
            rd = self.spec.roles.get(r)
            if rd is None:
                continue
            for perm in rd.can:
                if perm not in grants or _SCOPE_RANK[rd.scope] > _SCOPE_RANK[grants[perm]]:
                    grants[perm] = rd.scope
        team: set[str] = set()
        for e in self._reports(email.lower()):
            team.add(e)
            o = self._users[e].owner
            if o:
                team.add(o)
        return User(
            email=email.lower(), name=name, roles=tuple(roles), manager=manager.lower() if manager else None,
            owner=owner, grants=grants, team=frozenset(team), is_local=is_local, known=known,
        )

    def user(self, email: str | None) -> User:
        """The user for a signed-in e-mail; `None` gives the local fallback user. An
        e-mail not in roles.yaml gives a user with no permissions (`known=False`)."""
        if email is None:
            return self.local_user()
        u = self._users.get(email.strip().lower())
        if u is None:
            return User(email=email.strip().lower(), name=email.strip(), roles=(), known=False)
        return self._resolve(email.strip(), u.name, list(u.roles), u.manager, u.owner)

    def local_user(self) -> User:
        lu = self.spec.local_user
        return self._resolve(lu.email, lu.name, list(lu.roles), lu.manager, lu.owner, is_local=True)

    @property
    def may_impersonate(self) -> bool:
        return self.spec.local_user.impersonate

    def current_user(self, email: str | None, *, auth_enabled: bool, act_as: str | None = None) -> User:
        """What the app calls: with auth on, the signed-in e-mail (None = not signed in
        gives a user with no permissions); with auth off, the local user — or, when
        `local_user.impersonate` is true, the roles.yaml user picked in `act_as` (a demo
        mode: without auth there is no security to keep anyway). `act_as` is ignored
        when auth is on."""
        if not auth_enabled:
            if act_as and self.may_impersonate and act_as.strip().lower() in self._users:
                return self.user(act_as)
            return self.local_user()
        if not email:
            return User(email="", name="Not signed in", roles=(), known=False)
        return self.user(email)

    def users(self) -> list[User]:
        return [self.user(e) for e in self._users]

    def by_owner(self, owner: str | None) -> User | None:
        """The user whose `owner` name matches accounts.owner (or whose e-mail does)."""
        if not owner:
            return None
        for e, u in self._users.items():
            if u.owner == owner or e == str(owner).lower():
                return self.user(e)
        return None

    def owner_email(self, account: Mapping[str, Any]) -> str | None:
        u = self.by_owner(account.get("owner"))
        if u is not None:
            return u.email
        oe = account.get("owner_email")
        return str(oe).lower() if oe else None

    def manager_email(self, account: Mapping[str, Any]) -> str | None:
        u = self.by_owner(account.get("owner"))
        if u is None:
            oe = account.get("owner_email")
            u = self.user(oe) if oe else None
        return u.manager if u is not None and u.known else None

    # -- checks -----------------------------------------------------------------------
    @property
    def allow_self_approval(self) -> bool:
        return self.spec.allow_self_approval

    def approver_roles(self) -> list[str]:
        return [name for name, r in self.spec.roles.items() if "approve" in r.can]

    def require_approver(self, user: User, role: str, account: Mapping[str, Any] | None, created_by: str | None) -> None:
        """Raise unless `user` holds `role`, that role grants `approve` over `account`,
        and (unless allowed) the user is not the one who created the action."""
        rd = self.spec.roles.get(role)
        if not user.known:
            raise PermissionDenied(f"{user.email or 'an anonymous user'} is not listed in config/roles.yaml and may not approve")
        if role not in user.roles:
            raise PermissionDenied(
                f"{user.label} may not approve: this action needs approval by a {role}"
            )
        if rd is None or "approve" not in rd.can:
            raise PermissionDenied(f"the role {role!r} does not grant `approve` in config/roles.yaml")
        if not covers(user, rd.scope, account):
            raise PermissionDenied(
                f"{user.label} may approve only for {'their own' if rd.scope == 'own' else 'their team' + chr(39) + 's'} "
                f"accounts, not{_account_words(account)}"
            )
        if not self.allow_self_approval and created_by and created_by.lower() == user.email:
            raise PermissionDenied(
                f"{user.label} created this action and may not approve it themselves (allow_self_approval is off)"
            )


def parse_roles(text: str, file: str = "config/roles.yaml") -> Roles:
    what = "the roles file"
    doc, col = parse_yaml(text, file, what)
    data = plain(doc)
    if not col.top_level(data, RolesFile, ("roles",)):
        col.raise_if_errors()
    roles = col.each(("roles",), data.get("roles"), RoleDef)
    users = col.each(("users",), data.get("users"), UserDef)
    local = col.one(("local_user",), data.get("local_user", {}) or {}, LocalUser)
    scalars: dict[str, Any] = {}
    for key in ("version", "description", "allow_self_approval"):
        if key in data:
            try:
                RolesFile.model_validate({key: data[key], "roles": {}})
                scalars[key] = data[key]
            except ValidationError as exc:
                col.pydantic((), exc, RolesFile)
    role_names = set((data.get("roles") or {}).keys()) if isinstance(data.get("roles"), dict) else set()
    user_emails = {str(e).lower() for e in (data.get("users") or {})} if isinstance(data.get("users"), dict) else set()
    for email, u in users.items():
        if not EMAIL.match(email):
            col.add(("users", email), f"'{email}' is not an e-mail address; users are keyed by e-mail")
        for i, r in enumerate(u.roles):
            if r not in role_names:
                col.add(("users", email, "roles", i), f"unknown role '{r}'{did_you_mean(r, role_names)}")
        if u.manager is not None and u.manager.lower() not in user_emails:
            col.add(("users", email, "manager"),
                    f"manager '{u.manager}' is not listed under users{did_you_mean(u.manager, user_emails)}")
        if u.manager is not None and u.manager.lower() == email.lower():
            col.add(("users", email, "manager"), "a user cannot be their own manager")
    if local is not None:
        for i, r in enumerate(local.roles):
            if r not in role_names:
                col.add(("local_user", "roles", i), f"unknown role '{r}'{did_you_mean(r, role_names)}")
    owners: dict[str, str] = {}
    for email, u in users.items():
        if u.owner:
            if u.owner in owners:
                col.add(("users", email, "owner"), f"owner '{u.owner}' is already mapped to {owners[u.owner]}")
            owners[u.owner] = email
    col.raise_if_errors()
    spec = RolesFile.model_validate({**scalars, "roles": roles, "users": users, "local_user": local})
    return Roles(spec, path=file)


def load_roles(path: str | Path = "config/roles.yaml") -> Roles:
    return parse_roles(read_text(path, "the roles file"), file=str(path))


__all__ = [
    "PERMISSIONS",
    "SCOPES",
    "ConfigError",
    "PermissionDenied",
    "Roles",
    "User",
    "allowed",
    "covers",
    "load_roles",
    "parse_roles",
    "require",
]
