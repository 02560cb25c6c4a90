"""A stand-in OpenAI-compatible server on loopback, for what a real server in CI cannot show: a
llama.cpp-style `/props` chat template, a vLLM-style `/v1/models` `root`, a server that publishes
nothing, a chat-only API. Completions are deterministic (the fake backend's text) and carry a
`usage` of the prompt's and the output's word counts, so token accounting can be checked."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tasks.backends import GenerationParams
from tasks.backends.fake import fake_text


class StandIn:
    """Serves `name` at `url` (`.../v1`); `props`, `models_root`, `chat_only`, `pages` shape what
    it says.
    `requests` logs every (method, path, body)."""

    def __init__(
        self,
        name: str = "served-model",
        props: dict[str, Any] | None = None,
        models_root: str | None = None,
        chat_only: bool = False,
        pages: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.props, self.models_root, self.chat_only = name, props, models_root, chat_only
        self.pages = pages or {}  # more GET paths and their JSON (TGI's /info, SGLang's /get_model_info)
        self.requests: list[tuple[str, str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.root = f"http://127.0.0.1:{self.server.server_port}"
        self.url = f"{self.root}/v1"
        self.model = f"{self.url}#{name}"

    def __enter__(self) -> StandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts(self, path: str) -> list[dict]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    def complete(self, body: dict) -> dict:
        params = GenerationParams(seed=body.get("seed", 0), temperature=body.get("temperature", 0.7))
        text = fake_text(body["prompt"], params)
        for stop in body.get("stop") or []:
            text = text.split(stop, 1)[0]
        usage = {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": len(text.split())}
        choice = {"text": text, "index": 0, "finish_reason": "stop"}
        return {"object": "text_completion", "choices": [choice], "usage": usage}


def _handler(server: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, value: Any) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            server.requests.append(("GET", self.path, None))
            if self.path == "/props" and server.props is not None:
                return self._json(200, server.props)
            if self.path in server.pages:
                return self._json(200, server.pages[self.path])
            if self.path == "/v1/models":
                entry = {"id": server.name, "object": "model"}
                if server.models_root:
                    entry["root"] = server.models_root
                return self._json(200, {"object": "list", "data": [entry]})
            self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests.append(("POST", self.path, body))
            if self.path == "/v1/completions" and not server.chat_only:
                return self._json(200, server.complete(body))
            if self.path == "/v1/chat/completions":
                message = {"role": "assistant", "content": "A chat reply."}
                usage = {"prompt_tokens": 5, "completion_tokens": 3}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                return self._json(200, {"choices": [choice], "usage": usage})
            self._json(404, {"detail": "Not Found"})

    return Handler
