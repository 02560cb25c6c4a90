"""A deterministic fake model for tests and for trying a flow in seconds (`--backend fake`).

Each output is a function of the prompt and the seed only: a few numbered, question-shaped lines
drawn from a small vocabulary. Every call is recorded, so tests can count model calls. The model
id may carry options as a query string, e.g. `fake?delay=0.05&fail_rate=0.3`:

- `delay`: seconds to sleep per call;
- `fail_rate`: share of calls that raise a transient `ConnectionError`, decided by the call's
  content and how often it was tried (so a run is repeatable); like a real transient fault it
  goes away: the same content fails at most twice in a row, so a third try gets through;
- `fail_on`: a prompt containing this text always raises (a permanent error);
- `context`: prompts longer than this many words come back as `prompt_too_long`;
- `log`: a file to which every prompt is appended as a JSON line (to count calls across processes);
- `template`: `none` makes it publish no chat template (it publishes ChatML, the embedded model's
  family, otherwise), as a server that says nothing about its template would.

Token counts are words (prompt and output), so tests can check the run's token accounting.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from tasks.backends.base import Generation, GenerationParams, Prompt, ServedTemplate

_VERBS = ["Explain", "Describe", "Compare", "Summarize", "List", "Outline", "Evaluate", "Predict"]
_NOUNS = [
    "river",
    "engine",
    "market",
    "library",
    "protein",
    "glacier",
    "algorithm",
    "festival",
    "harbor",
    "vaccine",
    "satellite",
    "orchard",
    "theorem",
    "bridge",
    "language",
    "forest",
]
_ASPECTS = ["history", "main causes", "trade-offs", "daily impact", "open questions", "key steps"]

Responder = Callable[[Prompt, GenerationParams], str]

CHATML_SOURCE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def prompt_text(prompt: Prompt) -> str:
    """The prompt as one string (chat messages joined role-tagged), for hashing and inspection."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"<{m['role']}>{m['content']}" for m in prompt)


def fake_text(prompt: Prompt, params: GenerationParams) -> str:
    digest = hashlib.sha256(f"{params.seed}|{prompt_text(prompt)}".encode()).digest()
    lines = []
    for i in range(1 + digest[0] % 4):
        b = digest[1 + 3 * i : 4 + 3 * i]
        verb, noun, aspect = _VERBS[b[0] % 8], _NOUNS[b[1] % 16], _ASPECTS[b[2] % 6]
        lines.append(f"{i + 1}. {verb} the {aspect} of the {noun} ({b.hex()}).")
    return "\n".join(lines)


class FakeBackend:
    name = "fake"

    def __init__(self, model: str = "fake") -> None:
        self.model = model
        options = {k: v[0] for k, v in parse_qs(urlsplit(model).query).items()}
        self.delay = float(options.get("delay", 0))
        self.fail_rate = float(options.get("fail_rate", 0))
        self.fail_on = options.get("fail_on")
        self.context = int(options.get("context", 0))
        self.log = options.get("log")
        self.publishes_template = options.get("template", "chatml") != "none"
        self._attempts: Counter[str] = Counter()
        self.responder: Responder = fake_text
        self.calls: list[tuple[list[Prompt], GenerationParams]] = []
        self._lock = threading.Lock()

    @property
    def prompts(self) -> list[Prompt]:
        """Every prompt this backend has been asked to complete, in call order."""
        return [p for prompts, _ in self.calls for p in prompts]

    def served_template(self) -> ServedTemplate:
        """ChatML, published the way a server publishes its template (unless `template=none`)."""
        if not self.publishes_template:
            return ServedTemplate(asked=("the fake backend (template=none)",))
        return ServedTemplate(CHATML_SOURCE, "fake backend (ChatML)", {"eos_token": "<|im_end|>"})

    def _fail_if_asked(self, prompts: list[Prompt]) -> None:
        texts = [prompt_text(p) for p in prompts]
        if self.fail_on and any(self.fail_on in t for t in texts):
            raise RuntimeError(f"fake backend: permanent failure on a prompt containing {self.fail_on!r}")
        if self.fail_rate:
            key = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()
            with self._lock:
                self._attempts[key] += 1
                attempt = self._attempts[key]
            draw = hashlib.sha256(f"{key}:{attempt}".encode()).digest()[0] / 256
            if attempt <= 2 and draw < self.fail_rate:
                raise ConnectionError(f"fake backend: transient failure (attempt {attempt})")

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        with self._lock:
            self.calls.append((list(prompts), params))
            if self.log:
                with open(self.log, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(prompt_text(p)) + "\n" for p in prompts)
        if self.delay:
            time.sleep(self.delay)
        self._fail_if_asked(prompts)
        out = []
        seen: dict[str, int] = {}
        for prompt in prompts:
            if self.context and len(prompt_text(prompt).split()) > self.context:
                out.append(Generation("", "prompt_too_long", len(prompt_text(prompt).split()), 0))
                continue
            # A sampling model draws a new text for each copy of a prompt in one batch (Magpie sends
            # the same pre-query prompt many times); greedy decoding repeats itself.
            key = prompt_text(prompt)
            repeat, seen[key] = seen.get(key, 0), seen.get(key, 0) + 1
            if repeat and params.temperature > 0:
                text = self.responder(prompt, params.model_copy(update={"seed": params.seed + 7919 * repeat}))
            else:
                text = self.responder(prompt, params)
            for stop in params.stop:
                text = text.split(stop, 1)[0]
            words = len(text.split())
            finish = "length" if words >= params.max_new_tokens else "stop"
            out.append(Generation(text, finish, len(prompt_text(prompt).split()), words))
        return out
