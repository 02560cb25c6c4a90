"""What a run will do before it does it: its stages, batches and prompts, and an estimate of the
tokens and the time, from a short calibration on the chosen backend (`--dry-run` prints it and
stops; a real run prints it first).

The plan counts the first round of each flow (later rounds top up rows the filters dropped, and
only as many as are missing). Completion tokens are an upper bound: every prompt at its stage's
token limit. The time is that bound at the rate the calibration measured (a batch of up to 8 short
prompts on the same backend and model, 16 tokens each; a real run reuses one measured in the last
day), so it is an estimate, not a promise: a
longer batch usually runs more tokens per second, and real prompts are longer.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.backends import GenerationParams, get_backend
from tasks.pipeline.artifacts import duration


@dataclass(frozen=True)
class Stage:
    name: str
    prompts: int
    max_new_tokens: int


def _instruct(p: dict[str, Any], inputs: int) -> list[Stage]:
    queries = inputs * p["num_instructions"]
    evolutions = [Stage(f"evol_instruct round {r}", queries, 160) for r in range(1, p["num_evolutions"] + 1)]
    return [Stage("self_instruct", inputs, 256), *evolutions, Stage("respond", queries, p["max_new_tokens"])]


def _magpie(p: dict[str, Any], inputs: int) -> list[Stage]:
    turns = p["num_rows"] * p["n_turns"]
    users = Stage("magpie (user turns)", turns, p["max_instruction_tokens"])
    return (
        [users] if p["only_instruction"] else [users, Stage("magpie (responses)", turns, p["max_new_tokens"])]
    )


def _self_instruct(p: dict[str, Any], inputs: int) -> list[Stage]:
    rounds = min(p["max_rounds"], math.ceil(p["num_instructions"] / p["prompts_per_round"]))
    return [
        Stage("bootstrap", rounds * p["prompts_per_round"], p["max_instruction_tokens"]),
        Stage("respond", p["num_instructions"], p["max_new_tokens"]),
    ]


def _generate(p: dict[str, Any], inputs: int) -> list[Stage]:
    messages = inputs * p["num_generations"]
    return [Stage("write_prompt", messages, 96), Stage("respond", messages, p["max_new_tokens"])]


PLANNERS = {"instruct": _instruct, "magpie": _magpie, "self_instruct": _self_instruct, "generate": _generate}
REUSE_FOR = 24 * 3600  # seconds a real run reuses a calibration
TOPICS = ("tides", "bread", "glaciers", "chess", "bees", "rivers", "comets", "maps")


def calibration_prompts(batch_size: int) -> list[list[dict[str, str]]]:
    """Short chat prompts, as many as a run's batch up to 8: batching changes the rate."""
    topics = TOPICS[: max(1, min(batch_size, len(TOPICS)))]
    return [[{"role": "user", "content": f"Write one short question about {topic}."}] for topic in topics]


def plan(flow: str, params: dict[str, Any], inputs: int) -> list[Stage]:
    """The stages of a run of `flow` with `params` over `inputs` input rows."""
    return PLANNERS[flow](params, inputs)


def calibrate(backend: str, model: str, batch_size: int, tokens: int = 16) -> float:
    """Completion tokens per second of one small batch on the backend."""
    prompts = calibration_prompts(batch_size)
    start = time.perf_counter()
    outputs = get_backend(backend, model).generate(prompts, GenerationParams(max_new_tokens=tokens, seed=0))
    seconds = max(time.perf_counter() - start, 1e-6)
    completion = sum(o.completion_tokens for o in outputs) or len(outputs) * tokens
    return completion / seconds


def _records() -> Path:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    return Path(PREFECT_LOCAL_STORAGE_PATH.value()) / "instructforge-calibration.json"


def measured_rate(backend: str, model: str, batch_size: int, fresh: bool) -> float:
    """The calibrated rate; a real run (`fresh=False`) reuses one measured in the last day, kept
    beside the cached results, so a rerun served from the cache calls no model at all."""
    key, path = f"{backend}|{model}|{min(batch_size, len(TOPICS))}", _records()
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = {}
    if not fresh and key in records and time.time() - records[key]["at"] < REUSE_FOR:
        return records[key]["rate"]
    rate = calibrate(backend, model, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({**records, key: {"rate": rate, "at": time.time()}}))
    os.replace(tmp, path)  # whole, even with two runs starting at once
    return rate


def describe(flow: str, params: dict[str, Any], inputs: int, fresh: bool = True) -> list[str]:
    """The plan as console lines: one per stage, then the totals and the time estimate."""
    stages = plan(flow, params, inputs)
    size = params["batch_size"]
    rate = measured_rate(params["backend"], params["model"], size, fresh)
    lines = [f"Plan for {flow} ({params['backend']}: {params['model']}), first round:"]
    for s in stages:
        lines.append(f"  {s.name:<26} {s.prompts:>6} prompts  {math.ceil(s.prompts / size):>4} batches")
    completion = sum(s.prompts * s.max_new_tokens for s in stages)
    prompts = sum(s.prompts for s in stages)
    lines.append(
        f"Estimate: {prompts:,} prompts, up to {completion:,} completion tokens; "
        f"at most {duration(completion / rate)} at {rate:,.0f} tokens/s (calibrated on this backend)"
    )
    return lines
