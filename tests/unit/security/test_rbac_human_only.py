"""`rbac.require_human`: the one rule for writes no API key may make, whatever its scopes."""

from __future__ import annotations

import uuid

import pytest

from webapp.context import SYSTEM, Origin
from webapp.errors import Forbidden
from webapp.security import rbac

THROUGH_KEY = Origin(actor_id=uuid.uuid4(), api_key_id=uuid.uuid4())
SIGNED_IN = Origin(actor_id=uuid.uuid4())


@pytest.mark.parametrize("permission", sorted(rbac.HUMAN_ONLY))
def test_a_key_is_refused_every_human_only_write(permission):
    with pytest.raises(Forbidden) as refused:
        rbac.require_human(THROUGH_KEY, ["users:update", permission])

    assert refused.value.slug == "insufficient-scope"
    assert permission in refused.value.detail


@pytest.mark.parametrize("origin", [SIGNED_IN, SYSTEM])
def test_humans_and_the_cli_pass(origin):
    rbac.require_human(origin, rbac.HUMAN_ONLY)


def test_a_key_passes_writes_that_touch_nothing_human_only():
    rbac.require_human(THROUGH_KEY, [])
    rbac.require_human(THROUGH_KEY, ["users:update", "users:replace"])


def test_acting_as_another_user_keeps_the_key():
    assert THROUGH_KEY.acting_as(uuid.uuid4()).api_key_id == THROUGH_KEY.api_key_id
