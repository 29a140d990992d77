"""Where a call comes from, in plain values, so services never read Flask's request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """The client behind an action: recorded in audit events, sessions and outbox messages."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    actor_id: uuid.UUID | None = None

    def acting_as(self, actor_id: uuid.UUID | None) -> Origin:
        return Origin(self.ip, self.user_agent, self.request_id, actor_id)


SYSTEM = Origin(user_agent="gatehouse-cli")
