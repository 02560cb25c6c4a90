"""Push a dataset directory to the Hugging Face Hub: the Parquet data, the dataset card with its
plots, the drop records and the run's counts, private by default.

The token comes from `HF_TOKEN` or, failing that, a Prefect Secret block named `hf-token`. It is
read inside the task, never passed as a parameter, so it appears in no task parameters, persisted
results, logs or card.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.caching import transient

SECRET_BLOCK = "hf-token"
# The card, the data, the card's plots, the drop records it refers to and the run's counts; not
# the local copies (dataset/, data.jsonl) nor failures.jsonl, whose error messages can hold paths.
UPLOADED = ("README.md", "data/*.parquet", "*.png", "drops.jsonl", "summary.json")


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from prefect.blocks.system import Secret

        return Secret.load(SECRET_BLOCK).get()
    except Exception:  # no block, no server: one message says how to provide the token
        raise ValueError(
            "Pushing to the Hub needs a token: set HF_TOKEN, or save a Prefect Secret block named "
            f"{SECRET_BLOCK!r} (prefect block register / the UI)."
        ) from None


def dataset_url(repo_id: str) -> str:
    """The dataset's page on the Hub (or on the endpoint HF_ENDPOINT names)."""
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/datasets/{repo_id}"


def upload_plan(output_dir: Path) -> list[str]:
    """The files (relative to `output_dir`) that a push uploads."""
    files = sorted({p for pattern in UPLOADED for p in Path(output_dir).glob(pattern)})
    return [str(p.relative_to(output_dir)) for p in files]


@task(
    name="push_to_hub",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=transient,
)
def push_to_hub(output_dir: Path, repo_id: str, private: bool = True) -> str:
    """Upload the dataset directory's card and data to `repo_id`; returns the commit URL."""
    from huggingface_hub import HfApi

    token = hub_token()
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(output_dir),
        allow_patterns=list(UPLOADED),
        commit_message="Upload synthetic instruction data (instructforge)",
    )
    get_run_logger().info("Pushed %s to the Hub dataset %s", ", ".join(upload_plan(output_dir)), repo_id)
    return str(getattr(commit, "commit_url", commit))
