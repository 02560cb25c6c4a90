"""The last stage of every flow: count, write the dataset directory with its card, show the report
in the Prefect UI, and optionally push to the Hub."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from tasks.data.card import DEFAULT_LICENSE, public, render_card
from tasks.data.dataset import report_markdown, save_dataset, summarize, versioned_dir
from tasks.data.hub import dataset_url
from tasks.data.hub import push_to_hub as push_task
from tasks.data.recipe import build_recipe, write_recipe
from tasks.data.schema import features_for
from tasks.data.versions import point_latest, prune
from tasks.pipeline.artifacts import publish_report
from tasks.pipeline.batching import Ledger, upstream
from tasks.pipeline.parameters import Output, flat
from tasks.quality.metrics import quality_metrics
from tasks.templates.prompt_overrides import describe


def keep_versions(version: Path, rows: int, keep: int | None) -> None:
    """After a versioned save: point `latest` at the new version, then apply the retention."""
    logger = get_run_logger()
    if reason := point_latest(version, rows):
        logger.warning(reason)
    if keep and (deleted := prune(version.parent, keep)):
        logger.info("Deleted %d old versions (keep_versions=%d): %s", len(deleted), keep, ", ".join(deleted))


def run_name() -> str:
    """A flow run's name: the flow, its output directory's name and its start time (UTC), so runs
    into different directories, or at different times, tell apart in the UI."""
    output = Path(str(flat(flow_run.parameters or {}).get("output_dir") or "output")).name
    return f"{flow_run.flow_name}-{output}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


def publish(
    flow: str,
    rows: list[dict[str, Any]],
    ledger: Ledger,
    seeds: int,
    output: Output | Path | str,
    extra: dict[str, Any] | None = None,
    prompt_overrides: dict[str, str] | None = None,
) -> dict[str, Any] | State:
    """Save `rows` (and what `ledger` set aside) as the run's dataset where `output` says (the
    flow's output group, or just a directory: then the card's licence is the flow's `license`
    parameter, else "other"); returns the summary, with `extra` (flow-specific facts) and the
    `prompt_overrides` the run rendered with added to it. A push the Hub refused gives a Failed
    state that carries the summary, with `hub_error` added."""
    logger = get_run_logger()
    parameters = flat(flow_run.parameters or {})  # as the flags name them
    if not isinstance(output, Output):
        output = Output(output_dir=Path(output), license=parameters.get("license") or DEFAULT_LICENSE)
    license, push_to_hub = output.license or DEFAULT_LICENSE, output.push_to_hub
    summary = {"flow": flow, **summarize(rows, ledger, seeds), **(extra or {})}
    summary["quality"] = quality_metrics(rows, evolved="evol_instruct" in summary["techniques"])
    summary["prompt_overrides"] = describe(prompt_overrides or {})
    # for tasks.compare; pushed with the data, so without local paths
    summary["parameters"] = json.loads(json.dumps(public(parameters), default=str))
    target = versioned_dir(output.output_dir) if output.versioned else Path(output.output_dir)
    card = render_card(flow, parameters, summary, rows, features_for(flow, rows), license)
    logger.info("Saving %d rows to %s", len(rows), target)
    # The save waits on (and the run graph joins it to) the task runs that wrote the rows.
    path = save_dataset(rows, ledger.drops, ledger.failures, summary, target, card, wait_for=upstream(rows))
    write_recipe(path, build_recipe(flow, parameters, prompt_overrides or {}))  # to rerun it
    publish_report(flow, rows, summary, report_markdown(summary))
    if output.versioned and path == target:
        keep_versions(path, len(rows), output.keep_versions)
    pushed = push_task(path, push_to_hub, output.private, return_state=True) if push_to_hub else None
    if pushed and pushed.is_completed():
        summary["hub_commit"] = pushed.result()
        summary["hub_url"] = dataset_url(push_to_hub)
    if ledger.failures:
        logger.warning(
            "%d rows failed with errors (see failures.jsonl); run the same command again to retry them",
            len(ledger.failures),
        )
    kept = {"kept_previous": str(target)} if path != target else {}  # see replacement_refused
    summary = {**summary, "output_dir": str(path), **kept}
    if pushed and not pushed.is_completed():
        # The run fails (an alert fires) yet hands back its summary: the data is saved locally.
        summary["hub_error"] = pushed.message or "the push to the Hub failed"
        return Failed(message=summary["hub_error"], data=summary)
    return summary
