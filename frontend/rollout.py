"""What the dashboard says about getting changes to the workers."""

from __future__ import annotations

from dataclasses import dataclass

from fleet.models import ConfigVersion, PublishState
from fleet.selectors import RolloutStatus, rollout_status


@dataclass
class Rollout:
    version: int | None
    status: RolloutStatus | None
    publishing: bool  # committed changes that no version covers yet

    @property
    def complete(self) -> bool:
        return not self.publishing and self.status is not None and self.status.complete


def current_rollout() -> Rollout:
    """The newest config version and how far it got, plus whether newer changes wait for a publish."""
    latest = ConfigVersion.objects.order_by("-number").only("number").first()
    state = PublishState.objects.filter(pk=1).first()  # read-only: a GET must not create the row
    publishing = state is not None and state.requested > state.published
    if latest is None:
        return Rollout(version=None, status=None, publishing=publishing)
    return Rollout(version=latest.number, status=rollout_status(latest.number), publishing=publishing)
