"""The model seam: every technique talks to a model through `Backend.generate` and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

# A prompt is either a chat conversation (rendered with the model's chat template, generation prompt
# appended) or a raw string sent to the model exactly as given (Magpie's pre-query prompts).
Message = dict[str, str]
Prompt = list[Message] | str

FinishReason = Literal["stop", "length", "prompt_too_long"]


class GenerationParams(BaseModel):
    """Sampling parameters of one generation call; part of every cache key and every row's provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(256, gt=0, description="Most tokens generated per prompt.")
    temperature: float = Field(0.7, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    repetition_penalty: float = Field(1.0, gt=0.0, description="Above 1 discourages loops.")
    seed: int = Field(0, description="Sampling seed; with the batch content it fixes the output.")
    stop: tuple[str, ...] = Field((), description="Strings that end a generation (cut from output).")


@dataclass(frozen=True)
class Generation:
    """One model output. `finish_reason` says why it ended: a stop token/string, the token limit, or a
    prompt that does not fit the context window (then `text` is empty)."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ServedTemplate:
    """What a backend without a tokenizer can tell about the chat template of the model it serves:
    the Jinja text it publishes (with `where` it came from and the special tokens published beside
    it), the model names or paths whose tokenizer may hold it, and what was asked (for the error
    line when nothing is found)."""

    source: str | None = None
    where: str = ""
    special_tokens: dict[str, str] = field(default_factory=dict)
    model_names: tuple[str, ...] = ()
    asked: tuple[str, ...] = ()


class Backend(Protocol):
    """A loaded model. `generate` is batched: prompts in, one Generation per prompt out, same order.
    It raises on backend failures (so Prefect retries the batch and never caches it as done).
    A backend with no `tokenizer` attribute (a server, the fake) has `served_template()` instead,
    so Magpie can find the chat template it must cut its pre-query prompt from."""

    name: str

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]: ...
