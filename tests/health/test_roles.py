"""Roles: who may act, dismiss, approve, retry and sync — and on which accounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from health.roles import PermissionDenied, allowed, load_roles, parse_roles, require
from health.yaml_config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "config" / "roles.yaml").read_text(encoding="utf-8")
FILE = "config/roles.yaml"
CARLOS_ACC = {"account_id": "A1", "name": "Acme", "owner": "Carlos Mendes"}
DANIEL_ACC = {"account_id": "A2", "name": "Bolt", "owner": "Daniel Okafor"}


@pytest.fixture(scope="module")
def roles():
    return load_roles(ROOT / "config" / "roles.yaml")


def test_csm_acts_on_their_own_book_only(roles):
    carlos = roles.user("Carlos.Mendes@example.com")  # e-mails are case-insensitive
    assert carlos.roles == ("csm",) and carlos.owner == "Carlos Mendes"
    require(carlos, "act", CARLOS_ACC)
    require(carlos, "dismiss", CARLOS_ACC)
    with pytest.raises(PermissionDenied, match=r"may act only on their own accounts, not on Bolt \(owned by Daniel Okafor\)"):
        require(carlos, "act", DANIEL_ACC)
    with pytest.raises(PermissionDenied, match="none of their roles grants it"):
        require(carlos, "approve", CARLOS_ACC)
    # The owner's e-mail column identifies the book too.
    assert allowed(carlos, "act", {"account_id": "A3", "owner": "C. Mendes", "owner_email": "carlos.mendes@example.com"})


def test_managers_cover_their_team_transitively(roles):
    maria = roles.user("maria.garcia@example.com")
    assert allowed(maria, "approve", CARLOS_ACC) and not allowed(maria, "approve", DANIEL_ACC)
    rachel = roles.user("rachel.stone@example.com")  # manages Maria and David
    assert allowed(rachel, "approve", CARLOS_ACC) and allowed(rachel, "approve", DANIEL_ACC)
    ops = roles.user("olivia.novak@example.com")
    assert allowed(ops, "retry", DANIEL_ACC) and allowed(ops, "sync") and not allowed(ops, "act", DANIEL_ACC)


def test_approver_checks(roles):
    maria, david = roles.user("maria.garcia@example.com"), roles.user("david.kim@example.com")
    carlos = roles.user("carlos.mendes@example.com")
    roles.require_approver(maria, "manager", CARLOS_ACC, created_by="carlos.mendes@example.com")
    with pytest.raises(PermissionDenied, match="needs approval by a manager"):
        roles.require_approver(carlos, "manager", CARLOS_ACC, created_by="emily.chen@example.com")
    with pytest.raises(PermissionDenied, match="their team's accounts, not on Acme"):
        roles.require_approver(david, "manager", CARLOS_ACC, created_by="carlos.mendes@example.com")
    with pytest.raises(PermissionDenied, match="may not approve it themselves"):
        roles.require_approver(maria, "manager", CARLOS_ACC, created_by="maria.garcia@example.com")
    lenient = parse_roles(GOOD.replace("allow_self_approval: false", "allow_self_approval: true"))
    lenient.require_approver(lenient.user("maria.garcia@example.com"), "manager", CARLOS_ACC, "maria.garcia@example.com")


def test_unknown_and_local_users(roles):
    stranger = roles.user("someone@else.com")
    assert not stranger.known and stranger.grants == {}
    with pytest.raises(PermissionDenied, match="not listed in config/roles.yaml"):
        require(stranger, "act", CARLOS_ACC)
    local = roles.current_user(None, auth_enabled=False)
    assert local.is_local and local.email == "local@localhost"
    assert allowed(local, "act", DANIEL_ACC) and not allowed(local, "approve", DANIEL_ACC)
    # Demo mode: with auth off, the app may let the visitor act as a listed user ...
    assert roles.current_user(None, auth_enabled=False, act_as="maria.garcia@example.com").email == "maria.garcia@example.com"
    assert roles.current_user(None, auth_enabled=False, act_as="nobody@x.com").is_local
    # ... never with auth on; signed-out visitors get nothing.
    assert roles.current_user("carlos.mendes@example.com", auth_enabled=True, act_as="maria.garcia@example.com").email == (
        "carlos.mendes@example.com"
    )
    assert roles.current_user(None, auth_enabled=True).grants == {}
    strict = parse_roles(GOOD.replace("  impersonate: true", "  impersonate: false"))
    assert strict.current_user(None, auth_enabled=False, act_as="maria.garcia@example.com").is_local


def test_owner_and_manager_emails(roles):
    assert roles.owner_email(CARLOS_ACC) == "carlos.mendes@example.com"
    assert roles.manager_email(CARLOS_ACC) == "maria.garcia@example.com"
    assert roles.owner_email({"owner": "Nobody", "owner_email": "X@Y.com"}) == "x@y.com"
    assert roles.manager_email({"owner": "Nobody"}) is None


@pytest.mark.parametrize(
    "old,new,needle,message",
    [
        ("    can: [act, dismiss, retry]\n    scope: own", "    can: [act, dismiss, retyr]\n    scope: own", "retyr",
         "roles.csm.can[2]: 'retyr' is not allowed — did you mean 'retry'?"),
        ("    scope: team", "    scope: teams", "scope: teams", "roles.manager.scope: 'teams' is not allowed — did you mean 'team'?"),
        ("roles: [csm], manager: maria.garcia@example.com, owner: Carlos Mendes",
         "roles: [csn], manager: maria.garcia@example.com, owner: Carlos Mendes", "[csn]",
         "users.carlos.mendes@example.com.roles[0]: unknown role 'csn' — did you mean 'csm'?"),
        ("{ name: Emily Chen, roles: [csm], manager: maria.garcia@example.com,",
         "{ name: Emily Chen, roles: [csm], manager: maria.garcia@exmple.com,", "maria.garcia@exmple.com",
         "manager 'maria.garcia@exmple.com' is not listed under users — did you mean 'maria.garcia@example.com'?"),
        ("  olivia.novak@example.com:", "  olivia.novak:", "olivia.novak:", "'olivia.novak' is not an e-mail address"),
        ("owner: Tom Fischer }", "owner: Carlos Mendes }", "owner: Carlos Mendes }\n  daniel",
         "owner 'Carlos Mendes' is already mapped to carlos.mendes@example.com"),
        ("{ name: Lucas Moreau, roles", "{ nam: Lucas Moreau, roles", "nam: Lucas",
         "users.lucas.moreau@example.com.nam: unknown key 'nam' — did you mean 'name'?"),
        ("allow_self_approval: false", "allow_self_aproval: false", "allow_self_aproval",
         "unknown section 'allow_self_aproval' — did you mean 'allow_self_approval'?"),
        ("  roles: [local]", "  roles: [locl]", "[locl]", "local_user.roles[0]: unknown role 'locl' — did you mean 'local'?"),
    ],
)
def test_roles_file_errors_have_lines(old, new, needle, message):
    assert old in GOOD, old
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ConfigError) as err:
        parse_roles(text, FILE)
    errors = [str(i) for i in err.value.issues]
    hits = [e for e in errors if message in e]
    assert hits, errors
    line = text[: text.index(needle)].count("\n") + 1
    assert hits[0].startswith(f"{FILE}:{line}: "), (hits[0], line)


def test_roles_file_needs_roles():
    with pytest.raises(ConfigError, match="the section 'roles' is missing"):
        parse_roles("users: {}\n", FILE)
