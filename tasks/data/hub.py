"""Push a dataset directory to the Hugging Face Hub: the Parquet data, the dataset card with its
plots, the drop records, the run's counts and its recipe, private by default.

The token comes from `HF_TOKEN` or, failing that, a Prefect Secret block named `hf-token`. It is
read inside the task, never passed as a parameter, so it appears in no task parameters, persisted
results, logs or card. `check_hub` asks the Hub, before any model call, whether the token is valid
and may write to the repository; a push the Hub refuses (a 4xx) is never retried.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from tasks.pipeline.caching import transient

SECRET_BLOCK = "hf-token"
# The card, the data, the card's plots, the drop records it refers to, the run's counts and its
# recipe (tasks/data/recipe.py); not
# the local copies (dataset/, data.jsonl) nor failures.jsonl, whose error messages can hold paths.
UPLOADED = ("README.md", "data/*.parquet", "*.png", "drops.jsonl", "summary.json", "recipe.json")
# Client errors a retry cannot fix; 408 and 429 are the Hub asking to come back later.
RETRYABLE_4XX = (408, 429)


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


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def refused(err: BaseException) -> bool:
    """The Hub answered no (a 4xx other than 408/429): asking again gets the same answer."""
    status = _status(err)
    return status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX


def one_line(err: BaseException) -> str:
    """The Hub's error message on one line (huggingface_hub's messages span several)."""
    return " ".join(str(err).split())


def check_hub(repo_id: str) -> None:
    """Before any model call: the token is valid and may write to dataset repo `repo_id`, which
    exists or can be created. Raises ValueError with the problem and its fix, on one line."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi(token=hub_token())
    try:
        me = api.whoami()
        namespace = repo_id.split("/")[0] if "/" in repo_id else me["name"]
        try:
            api.repo_info(repo_id, repo_type="dataset")
            exists = True
        except RepositoryNotFoundError:
            exists = False
    except HfHubHTTPError as err:
        if _status(err) == 401:
            raise ValueError(
                f"The Hub at {constants.ENDPOINT} rejected the token (HF_TOKEN or the {SECRET_BLOCK!r} "
                "block): create a token with write access at "
                f"{constants.ENDPOINT}/settings/tokens and set HF_TOKEN to it."
            ) from None
        raise ValueError(f"Cannot check the Hub repository {repo_id!r}: {one_line(err)}") from None
    except Exception as err:  # connection refused, DNS, TLS: the HTTP client's own errors
        raise ValueError(
            f"Cannot reach the Hub at {constants.ENDPOINT} ({one_line(err)}): check the network, "
            "HF_ENDPOINT, or push later without --push-to-hub."
        ) from None
    _check_writable(repo_id, namespace, exists, me)


def _check_writable(repo_id: str, namespace: str, exists: bool, me: dict[str, Any]) -> None:
    role = me.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise ValueError(
            f"The Hub token of {me['name']!r} is read-only: pushing to {repo_id!r} needs a token with "
            "write access (Hub settings, Access Tokens)."
        )
    owners = [me["name"], *(org["name"] for org in me.get("orgs", []))]
    if namespace not in owners:
        verb = "write to the existing" if exists else "create the"
        raise ValueError(
            f"The Hub token of {me['name']!r} cannot {verb} dataset {repo_id!r}: it may write only under "
            f"{', '.join(repr(o) for o in owners)}. Pass --push-to-hub {me['name']}/<name>."
        )


def _hub_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a raised error a retry can fix; never a refusal (returned as a Failed state)."""
    error = state.data if isinstance(state.data, BaseException) else None
    return error is not None and transient(task, task_run, state) and not refused(error)


@task(
    name="push_to_hub",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_hub_transient,
)
def push_to_hub(output_dir: Path, repo_id: str, private: bool = True) -> str:
    """Upload the dataset directory's card and data to `repo_id`; returns the commit URL. A push
    the Hub refuses ends Failed with the Hub's one-line reason (no retry, no traceback)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=hub_token())
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(output_dir),
            allow_patterns=list(UPLOADED),
            commit_message="Upload synthetic instruction data (instructforge)",
        )
    except HfHubHTTPError as err:
        if refused(err):
            return Failed(message=f"the Hub refused the push to {repo_id!r}: {one_line(err)}")
        raise
    get_run_logger().info("Pushed %s to the Hub dataset %s", ", ".join(upload_plan(output_dir)), repo_id)
    return str(getattr(commit, "commit_url", commit))
