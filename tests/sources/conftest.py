"""Fixtures shared by the write-back tests (Salesforce, HubSpot, ServiceNow, SMTP): the
shipped roles and playbooks, and a clock the tests move by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from health.model_loader import load_model
from health.playbooks import load_playbooks
from health.roles import load_roles

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += dt.timedelta(**kw)


@pytest.fixture(scope="module")
def roles():
    return load_roles(ROOT / "config" / "roles.yaml")


@pytest.fixture(scope="module")
def playbooks(roles):
    model = load_model(ROOT / "weights.yaml").model
    return load_playbooks(ROOT / "config" / "playbooks.yaml", model, roles=list(roles.spec.roles))


@pytest.fixture
def clock() -> Clock:
    return Clock()
