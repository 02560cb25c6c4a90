"""A run uses a Prefect server already running locally, and only a real, compatible one: stand-in
HTTP services on a free port answer as Prefect does, or as something else on that port would."""

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prefect
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.pipeline import server

PREFECT_ANSWERS = {
    "/api/health": True,
    "/api/admin/version": prefect.__version__,
    "/api/admin/storage": {"default_result_storage_block_id": None},
}


def serve(answers: dict, status: int = 200):
    """An HTTP service on a free local port answering `answers[path]` as JSON (404 elsewhere)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path not in answers:
                self.send_error(404)
                return
            body = answers[self.path]
            data = (
                body.encode() if isinstance(body, str) and body.startswith("<") else json.dumps(body).encode()
            )
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/api"


@pytest.fixture
def stand_in(request):
    httpd, url = serve(request.param)
    yield url
    httpd.shutdown()
    httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stand_in", [PREFECT_ANSWERS], indirect=True)
def test_a_prefect_server_is_found(stand_in):
    assert server.probe(stand_in) == (True, prefect.__version__)


OTHER_SERVICES = {
    "a web page on every path": {p: "<html>hello</html>" for p in PREFECT_ANSWERS},
    "health only, no Prefect admin API": {"/api/health": True},
    "health that is not true": {**PREFECT_ANSWERS, "/api/health": {"status": "ok"}},
    "a version that is not one": {**PREFECT_ANSWERS, "/api/admin/version": "banana"},
    "nothing at these paths": {},
}


@pytest.mark.parametrize("stand_in", OTHER_SERVICES.values(), ids=OTHER_SERVICES.keys(), indirect=True)
def test_another_http_service_is_not_mistaken_for_prefect(stand_in):
    assert server.probe(stand_in) == (False, "")


def test_a_service_that_does_not_speak_http_is_not_prefect():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_garbage():
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        assert server.probe(f"http://127.0.0.1:{listener.getsockname()[1]}/api", timeout=2) == (False, "")
    finally:
        listener.close()


def test_nothing_listening_is_no_server():
    assert server.probe(f"http://127.0.0.1:{free_port()}/api") == (False, "")


INCOMPATIBLE = {
    "older": ({**PREFECT_ANSWERS, "/api/admin/version": "3.0.0"}, "runs Prefect 3.0.0"),
    "other major": ({**PREFECT_ANSWERS, "/api/admin/version": "2.20.0"}, "runs Prefect 2.20.0"),
    "server-wide storage": (
        {
            **PREFECT_ANSWERS,
            "/api/admin/storage": {"default_result_storage_block_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
        },
        "result storage",
    ),
}


@pytest.mark.parametrize("answers, why", INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_an_incompatible_prefect_server_is_named_and_not_used(answers, why, capsys, monkeypatch):
    httpd, url = serve(answers)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    try:
        with temporary_settings(restore_defaults={PREFECT_API_URL}), server.local_server(url) as used:
            assert used is None
            assert PREFECT_API_URL.value() is None
    finally:
        httpd.shutdown()
        httpd.server_close()
    line = capsys.readouterr().out
    assert why in line and "starting a temporary one" in line and line.count("\n") == 1


@pytest.mark.parametrize("stand_in", [PREFECT_ANSWERS], indirect=True)
def test_a_running_server_becomes_the_api_for_the_run_only(stand_in, capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with server.local_server(stand_in) as used:
            assert used == stand_in
            assert PREFECT_API_URL.value() == stand_in
            assert os.environ["PREFECT_API_URL"] == stand_in  # Dask workers and other children too
        assert PREFECT_API_URL.value() is None
        assert "PREFECT_API_URL" not in os.environ
    assert (
        capsys.readouterr().out
        == f"Using the Prefect server already running at {stand_in} (Prefect {prefect.__version__}).\n"
    )


@pytest.mark.parametrize("stand_in", [PREFECT_ANSWERS], indirect=True)
def test_a_chosen_api_or_the_opt_out_is_left_alone(stand_in, capsys, monkeypatch):
    with (
        temporary_settings({PREFECT_API_URL: "http://elsewhere:4200/api"}),
        server.local_server(stand_in) as used,
    ):
        assert used is None and PREFECT_API_URL.value() == "http://elsewhere:4200/api"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv(server.REUSE_ENV, "0")
    with temporary_settings(restore_defaults={PREFECT_API_URL}), server.local_server(stand_in) as used:
        assert used is None and PREFECT_API_URL.value() is None
    assert capsys.readouterr().out == ""
