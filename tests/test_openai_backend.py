"""The OpenAI-compatible backend against real servers on loopback: `transformers serve` with the
embedded model (the same weights must give the same greedy text as the local backend, and Magpie
through it the local backend's rows), and a tiny scripted HTTP server for the retry and error paths."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from flows.magpie import magpie
from tasks.backends import GenerationParams, get_backend
from tasks.backends import openai_backend as openai_module
from tasks.backends.embedded import EMBEDDED_MODEL, embedded_model_dir
from tasks.backends.openai_backend import OpenAIBackend, parse_model_id

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Why is the sky blue?"}],
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_model():
    """`transformers serve` on the embedded model, offline, on a free loopback port."""
    model_dir = str(embedded_model_dir())
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [str(cli), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        else:
            pytest.fail(f"transformers serve did not start: {server.stderr.read()[-2000:]}")
        yield f"{url}#{model_dir}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_served_model_gives_the_local_greedy_text(served_model):
    params = GenerationParams(max_new_tokens=16, temperature=0.0)
    remote = OpenAIBackend(served_model).generate(PROMPTS, params)
    local = get_backend("transformers", EMBEDDED_MODEL).generate(PROMPTS, params)
    assert [g.text for g in remote] == [g.text for g in local]
    assert all(g.text for g in remote)
    assert [g.finish_reason for g in remote] == [g.finish_reason for g in local]
    assert all(g.prompt_tokens > 0 and 0 < g.completion_tokens <= 16 for g in remote)


# One round: these tests count the requests of one pass (topping up is tested on the fake backend).
SMALL_MAGPIE = {"max_instruction_tokens": 48, "max_new_tokens": 16, "batch_size": 4, "max_rounds": 1}


def shape(row: dict) -> tuple:
    """What must not depend on the backend: the columns, the stages, the generation settings."""
    generation = json.loads(row["generation"])
    return (sorted(row), row["techniques"], row["templates"], {k: sorted(v) for k, v in generation.items()})


@pytest.fixture
def sent(monkeypatch):
    """Every (path, body) the OpenAI backend sends."""
    bodies, build = [], openai_module.request_body

    def spy(name, prompt, params):
        path, body = build(name, prompt, params)
        bodies.append((path, body))
        return path, body

    monkeypatch.setattr(openai_module, "request_body", spy)
    return bodies


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.long
def test_magpie_through_transformers_serve_gives_the_local_backends_rows(served_model, sent, tmp_path):
    model_dir = served_model.split("#", 1)[1]
    out = tmp_path / "s"
    served = magpie(backend="openai", model=served_model, num_rows=4, output_dir=out, **SMALL_MAGPIE)
    assert served["chat_template"]["source"] == f"tokenizer of the local directory {model_dir}"
    users = [body for path, body in sent if body.get("prompt", "").endswith("<|im_start|>user\n")]
    assert len(users) == 4 and all(path == "/completions" for path, _ in sent)
    assert all(body["stop"] == ["<|im_end|>"] for body in users)  # stopped at the derived end of turn
    assert served["usage"]["magpie"]["completion_tokens"] > 0  # the server's own counts

    local = magpie(num_rows=4, output_dir=tmp_path / "l", **SMALL_MAGPIE)
    assert served["pre_query"] == local["pre_query"] and local["usage"]["magpie"]["completion_tokens"] > 0
    assert served["chat_template"]["name"] == local["chat_template"]["name"]
    served_rows, local_rows = read_rows(tmp_path / "s"), read_rows(tmp_path / "l")
    assert served_rows and local_rows
    assert {json.dumps(shape(r)) for r in served_rows} == {json.dumps(shape(r)) for r in local_rows}
    for row in served_rows:
        assert row["backend"] == "openai" and row["instruction"].strip() and row["response"].strip()
        assert "<|im_" not in row["instruction"] + row["response"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.long
def test_two_turn_magpie_through_transformers_serve(served_model, sent, tmp_path):
    system = "You are a helpful assistant."
    summary = magpie(
        backend="openai",
        model=served_model,
        num_rows=3,
        n_turns=2,
        system_prompt=system,
        output_dir=tmp_path / "two",
        **{**SMALL_MAGPIE, "max_instruction_tokens": 96},
    )
    users = [b for _, b in sent if b.get("prompt", "").endswith("<|im_start|>user\n")]
    second = [b for b in users if b["prompt"].count("<|im_start|>user") == 2]  # after a whole turn
    assert second and all(b["stop"] == ["<|im_end|>"] for b in users)
    assert all(b["prompt"].count("<|im_start|>system") == 1 for b in second)
    dropped = sum(n for reason, n in summary["drops"].items() if not reason.startswith("deduplicate"))
    assert summary["rows_per_stage"]["magpie"] + dropped == 3  # every row complete or dropped with a reason
    for row in read_rows(tmp_path / "two"):
        assert [m["role"] for m in row["conversation"]] == ["user", "assistant"] * 2


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path / "data.jsonl")]


class Scripted(BaseHTTPRequestHandler):
    """Answers each POST with the next (status, body) of the server's script."""

    def do_POST(self):
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status, body = self.server.script.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.script, server.bodies = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


OK = {
    "choices": [{"message": {"content": " Paris. END more"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3},
}


def test_retries_429_and_5xx_then_succeeds(scripted):
    scripted.script = [(429, {}), (503, {}), (200, OK)]
    backend = OpenAIBackend(f"http://127.0.0.1:{scripted.server_port}/v1#tiny")
    params = GenerationParams(temperature=0.0, stop=(" END",), repetition_penalty=1.1)
    [gen] = backend.generate(PROMPTS[:1], params)
    assert (gen.text, gen.finish_reason, gen.prompt_tokens) == ("Paris.", "stop", 9)
    assert len(scripted.bodies) == 3
    sent = scripted.bodies[-1]
    assert sent["model"] == "tiny" and sent["stop"] == [" END"] and sent["repetition_penalty"] == 1.1


def test_client_errors_raise_and_context_overflow_is_a_finish_reason(scripted):
    backend = OpenAIBackend(f"http://127.0.0.1:{scripted.server_port}/v1#tiny")
    scripted.script = [(400, {"error": {"message": "maximum context length is 2048 tokens"}})]
    [gen] = backend.generate(PROMPTS[:1], GenerationParams())
    assert gen.finish_reason == "prompt_too_long" and gen.text == ""
    scripted.script = [(404, {"error": {"message": "model 'tiny' not found"}})]
    with pytest.raises(ValueError, match="404"):
        backend.generate(PROMPTS[:1], GenerationParams())


@pytest.mark.parametrize(
    "model, env, expected",
    [
        ("http://gpu:8000/v1#org/model", None, ("http://gpu:8000/v1", "org/model")),
        ("org/model", "https://api.example.com/v1/", ("https://api.example.com/v1", "org/model")),
        ("org/model", None, ("http://127.0.0.1:8000/v1", "org/model")),
    ],
)
def test_model_id_names_the_server_and_the_model(monkeypatch, model, env, expected):
    if env:
        monkeypatch.setenv("OPENAI_BASE_URL", env)
    else:
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert parse_model_id(model) == expected


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(ValueError, match="Cannot reach an OpenAI-compatible server"):
        OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1#tiny")


def test_a_model_id_without_a_url_scheme_is_rejected():
    with pytest.raises(ValueError, match="http://host:port/v1#model-name"):
        parse_model_id("gpu-box:8000#model")


@pytest.mark.parametrize(
    "status, body, chat_only",
    [
        (404, {"detail": "Not Found"}, True),  # a server without the route (FastAPI)
        (405, {"detail": "Method Not Allowed"}, True),
        (
            404,
            {
                "error": {
                    "message": "This is a chat model and not supported in the v1/completions "
                    "endpoint. Did you mean to use v1/chat/completions?"
                }
            },
            True,
        ),  # OpenAI's answer
        (404, {"error": {"message": "The model `tiny` does not exist."}}, False),  # vLLM: a wrong name
        (401, {"error": {"message": "Invalid API key"}}, False),
    ],
)
def test_a_chat_only_answer_is_told_from_a_wrong_model_name_or_key(scripted, status, body, chat_only):
    from tasks.backends.openai_backend import ChatOnlyServer

    backend = OpenAIBackend(f"http://127.0.0.1:{scripted.server_port}/v1#tiny")
    scripted.script = [(status, body)]
    if chat_only:
        with pytest.raises(ChatOnlyServer, match="chat messages only"):
            backend.check_raw_prompts()
    else:  # a wrong name or key: still one line before the run, but not called chat-only
        with pytest.raises(ValueError, match=f"answered {status}") as err:
            backend.check_raw_prompts()
        assert not isinstance(err.value, ChatOnlyServer)
