"""The scheduled flow where deployments registered before flows/ had rooms look for it
(`entrypoint: flows.curriculum_flow.scheduled_flow`): such a deployment keeps running after an upgrade. New
deployments name flows.orchestration.curriculum_flow."""

from flows.orchestration.curriculum_flow import curriculum_flow, scheduled_flow

__all__ = ["curriculum_flow", "scheduled_flow"]
