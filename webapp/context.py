"""Where a call comes from, in plain values, so services never read Flask's request."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """The client behind an action: recorded in audit events, sessions and outbox messages.

    `actor_id` is the acting user; `api_key_id` the API key they act through, if any (None for a
    signed-in human, the CLI and jobs). Services hand it to `rbac.require_human` for writes no
    key may make."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    actor_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None

    def acting_as(self, actor_id: uuid.UUID | None) -> Origin:
        return dataclasses.replace(self, actor_id=actor_id)


SYSTEM = Origin(user_agent="gatehouse-cli")
