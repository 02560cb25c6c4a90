"""Generation on any OpenAI-compatible server: vLLM, TGI, llama.cpp's server, Ollama, SGLang,
`transformers serve`, or a hosted API. The way past one machine: point the same flows at GPU servers.

Model id: the served model's name, with the server's base URL either in the id after a `#` ...

    http://gpu-box:8000/v1#HuggingFaceTB/SmolLM2-1.7B-Instruct

... or, for a bare name, in `OPENAI_BASE_URL` (default `http://127.0.0.1:8000/v1`). The API key, if
the server wants one, comes from `OPENAI_API_KEY` and never enters a model id (ids are logged and
stored in every row). Chat prompts go to `/chat/completions`, raw-string prompts (Magpie) to
`/completions`, and never elsewhere: a server that takes no raw prompt (a chat-only API) is refused
(`check_raw_prompts`), since a pre-query prompt wrapped in a chat turn is not Magpie. The chat
template a Magpie run needs is asked of the server (tasks/backends/server_template.py). Requests
run `INSTRUCTFORGE_OPENAI_CONCURRENCY` at a time (default 16; the server batches them), each with
a timeout (`INSTRUCTFORGE_OPENAI_TIMEOUT`, default 300 s) and up to 6 attempts on 429, 5xx and
connection errors, honouring `Retry-After`. `repetition_penalty` other than 1 is sent as the
vLLM/TGI extension field of that name.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tasks.backends.base import Generation, GenerationParams, Prompt, ServedTemplate
from tasks.backends.server_template import served_template

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
REQUEST_ATTEMPTS = 6
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ServerError(RuntimeError):
    """The server kept failing after every retry (transient: the Prefect task retries the batch)."""


class ChatOnlyServer(ValueError):
    """The server takes no raw prompt: a configuration error, never retried nor worked around."""


def parse_model_id(model: str) -> tuple[str, str]:
    """(base URL, served model name) from `URL#name` or a bare name plus `OPENAI_BASE_URL`."""
    if "#" in model:
        base, name = model.rsplit("#", 1)
    else:
        base, name = os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL), model
    if not base.startswith(("http://", "https://")) or not name:
        raise ValueError(
            f"Model {model!r} is not an OpenAI-compatible endpoint: use 'http://host:port/v1#model-name', "
            "or a bare model name with OPENAI_BASE_URL set to the server's /v1 URL."
        )
    return base.rstrip("/"), name


def request_body(name: str, prompt: Prompt, params: GenerationParams) -> tuple[str, dict]:
    """The endpoint path and JSON body for one prompt."""
    body = {
        "model": name,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = params.repetition_penalty
    if isinstance(prompt, str):
        return "/completions", {**body, "prompt": prompt}
    return "/chat/completions", {**body, "messages": prompt}


def parse_response(data: dict, params: GenerationParams) -> Generation:
    choice = data["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    text = text or ""
    for stop in params.stop:  # some servers return the text up to and including the stop string
        text = text.split(stop, 1)[0]
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    usage = data.get("usage") or {}
    return Generation(text.strip(), finish, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


def _chat_only(response: httpx.Response, name: str) -> bool:
    """Whether a /completions answer says the endpoint (not the model name) is missing: 404/405/501
    from a server without the route, or OpenAI's "This is a chat model ..." for a chat model."""
    text = response.text.lower()
    if "chat" in text and "not supported" in text:
        return True
    missing_model = name.lower() in text and ("not exist" in text or "not found" in text)
    return response.status_code in (404, 405, 501) and not missing_model


def _too_long(response: httpx.Response) -> bool:
    text = response.text.lower()
    return response.status_code == 400 and "context" in text and ("length" in text or "long" in text)


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str) -> None:
        self.model_id = model
        self.base_url, self.served_name = parse_model_id(model)
        self.concurrency = int(os.environ.get("INSTRUCTFORGE_OPENAI_CONCURRENCY", "16"))
        timeout = float(os.environ.get("INSTRUCTFORGE_OPENAI_TIMEOUT", "300"))
        key = os.environ.get("OPENAI_API_KEY")
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Authorization": f"Bearer {key}"} if key else {},
            limits=httpx.Limits(max_connections=self.concurrency),
        )
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="openai")
        self._check_reachable()

    def _check_reachable(self) -> None:
        """Fail before the first batch when nothing answers at the URL (a wrong host or port)."""
        try:
            self.client.get("/models", timeout=10.0)
        except httpx.TransportError as err:
            raise ValueError(
                f"Cannot reach an OpenAI-compatible server at {self.base_url} ({type(err).__name__}: "
                f"{err}). Start the server, or fix the URL in --model or OPENAI_BASE_URL."
            ) from None

    def served_template(self) -> ServedTemplate:
        """What the server publishes about its chat template (Magpie's pre-query prompts)."""
        return served_template(self.client, self.base_url, self.served_name)

    def check_raw_prompts(self) -> None:
        """Fail in one line when the server takes no raw prompt, or refuses this model name or key:
        one 1-token /completions call."""
        body = {"model": self.served_name, "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
        try:
            response = self.client.post("/completions", json=body)
        except httpx.TransportError:
            return  # unreachable now: the first batch's retries will say so
        if response.status_code != 200 and _chat_only(response, self.served_name):
            raise self._chat_only_error(response)
        if 400 <= response.status_code < 500 and response.status_code not in RETRY_STATUS:
            raise ValueError(  # a wrong model name or key: say so before the run, not in each batch
                f"{self.base_url}/completions answered {response.status_code}: "
                f"{' '.join(response.text.split())[:300]} (check the model name {self.served_name!r}, "
                "the URL and OPENAI_API_KEY)."
            )

    def _chat_only_error(self, response: httpx.Response) -> ChatOnlyServer:
        return ChatOnlyServer(
            f"{self.base_url}/completions answered {response.status_code} "
            f"({' '.join(response.text.split())[:160]}): this server takes chat messages only, and Magpie "
            "must send the raw pre-query prompt. Serve the model with vLLM, llama.cpp's server, TGI, "
            "SGLang or `transformers serve`, which take raw prompts at /v1/completions."
        )

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        return list(self.pool.map(lambda p: self._complete(p, params), prompts))

    def _complete(self, prompt: Prompt, params: GenerationParams) -> Generation:
        path, body = request_body(self.served_name, prompt, params)
        problem = ""
        for attempt in range(REQUEST_ATTEMPTS):
            try:
                response = self.client.post(path, json=body)
            except httpx.TransportError as err:  # refused, reset, timed out: worth another try
                problem, wait = f"{type(err).__name__}: {err}", None
            else:
                if response.status_code == 200:
                    return parse_response(response.json(), params)
                if _too_long(response):
                    return Generation("", "prompt_too_long")
                if path == "/completions" and _chat_only(response, self.served_name):
                    raise self._chat_only_error(response)
                if response.status_code not in RETRY_STATUS:
                    raise ValueError(
                        f"{self.base_url}{path} answered {response.status_code}: {response.text[:300]} "
                        f"(check the model name {self.served_name!r}, the URL and OPENAI_API_KEY)."
                    )
                problem, wait = f"HTTP {response.status_code}", response.headers.get("retry-after")
            if attempt + 1 < REQUEST_ATTEMPTS:
                time.sleep(_backoff(attempt, wait))
        raise ServerError(f"{self.base_url}{path} failed {REQUEST_ATTEMPTS} times; last: {problem}")


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Retry-After when the server sends seconds, else exponential backoff with jitter (cap 30 s)."""
    try:
        return min(float(retry_after), 60.0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return min(30.0, 0.5 * 2**attempt) * (0.5 + random.random() / 2)
