"""Alerts for scheduled refreshes: Prefect automations that send a notification when a run of one
of the project's flows fails, crashes or times out, or is still running after a time limit
(stuck). They are Prefect's own automations and notification blocks, evaluated by the Prefect
server (no watcher of ours), so they fire for deployment runs started by a worker.

    python -m tasks.alerts --webhook https://hooks.example/...   # saves a Custom Webhook block
    python -m tasks.alerts --block slack-webhook/team            # or any notification block saved in the UI

Run it once against the server (`PREFECT_API_URL`); running it again replaces the automations.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from uuid import UUID

FLOWS = ["instruct", "magpie", "self_instruct", "generate"]
BLOCK_NAME = "instructforge-alerts"
FAILED = "instructforge: a run failed"
STUCK = "instructforge: a run is stuck"
ENDED = ["Completed", "Failed", "Crashed", "Cancelled", "TimedOut"]
BODY = (
    "Flow run {{ flow_run.name }} of flow {{ flow.name }}"
    "{% if deployment %} (deployment {{ deployment.name }}){% endif %}"
    " is {{ flow_run.state.name }}: {{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)


def notification_block(webhook: str | None, block: str | None) -> UUID:
    """The id of the notification block to send to: a Custom Webhook block saved for `webhook`, or
    the saved block `block` ("<type slug>/<name>")."""
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if webhook:
        hook = CustomWebhookNotificationBlock(
            name=BLOCK_NAME, url=webhook, json_data={"subject": "{{subject}}", "text": "{{body}}"}
        )
        return hook.save(BLOCK_NAME, overwrite=True)
    return Block.load(block)._block_document_id


def automations(block_id: UUID, stuck_after: timedelta) -> list:
    """The two automations: a run of the project's flows that ended badly, and one still running
    `stuck_after` after it started."""
    from prefect.automations import EventTrigger, Posture
    from prefect.events.schemas.automations import AutomationCore

    ours = {"prefect.resource.role": "flow", "prefect.resource.name": FLOWS}
    failed = EventTrigger(
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=ours,
        expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"},
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=1,
    )
    stuck = EventTrigger(
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=ours,
        after={"prefect.flow-run.Running"},
        expect={f"prefect.flow-run.{state}" for state in ENDED},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=stuck_after,
    )
    stuck_body = BODY.replace("is {{ flow_run.state.name }}", f"has been running for over {stuck_after}")
    return [
        AutomationCore(name=FAILED, trigger=failed, actions=[_notify(block_id, FAILED, BODY)]),
        AutomationCore(name=STUCK, trigger=stuck, actions=[_notify(block_id, STUCK, stuck_body)]),
    ]


def _notify(block_id: UUID, subject: str, body: str):
    from prefect.automations import SendNotification

    return SendNotification(block_document_id=block_id, subject=subject, body=body)


def install(webhook: str | None, block: str | None, stuck_after: timedelta) -> list[UUID]:
    """Create (or replace) the automations on the server; returns their ids."""
    from prefect.client.orchestration import get_client

    block_id = notification_block(webhook, block)
    ids = []
    with get_client(sync_client=True) as client:
        for automation in automations(block_id, stuck_after):
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            ids.append(client.create_automation(automation))
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--webhook", help="URL to POST each alert to (saved as a Custom Webhook block)")
    where.add_argument("--block", help="a saved notification block, as <type slug>/<name>")
    parser.add_argument(
        "--stuck-after", type=float, default=180, help="minutes a run may run before it counts as stuck"
    )
    args = parser.parse_args(argv)
    try:
        install(args.webhook, args.block, timedelta(minutes=args.stuck_after))
    except Exception as err:  # no server, a block that does not exist: one line with the fix
        print(
            f"error: {' '.join(str(err).split())} (is PREFECT_API_URL set to a running server?)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    print(f"Alerts installed: {FAILED!r} and {STUCK!r} (stuck after {args.stuck_after:g} min).")


if __name__ == "__main__":
    main()
