"""A tiny stand-in for the Hugging Face Hub, on loopback: the endpoints `datasets.load_dataset` and
`huggingface_hub` call to load a dataset repo (file downloads, repo info, tree listing, paths
info), serving files from memory, and the ones a push calls (whoami, repo create, YAML
validation, preupload, commit), with the Hub's status codes for a bad token or a namespace the
token cannot write to. Point `HF_ENDPOINT` at `FakeHub.url` (before `datasets` and
`huggingface_hub` are imported: they read it at import)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"  # the repos' one commit


class FakeHub:
    """Dataset repos `{repo_id: {path: bytes}}` served at `url`; `requests` logs what was asked.
    `tokens` maps each valid token to its user: `{"name": ..., "orgs": [...], "role": "write"}`;
    `private` holds the ids of the repos created private; `refuse` (status, message), when set,
    refuses every write as the Hub refuses one (a quota, a namespace frozen for abuse)."""

    def __init__(self, repos: dict[str, dict[str, bytes]], tokens: dict[str, dict] | None = None) -> None:
        self.repos, self.requests, self.tokens, self.private = repos, [], tokens or {}, set()
        self.refuse: tuple[int, str] | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def entries(self, repo: str, prefix: str = "", recursive: bool = False) -> list[dict]:
        """Tree entries under `prefix`, as /api/.../tree returns them."""
        files, out, seen = self.repos[repo], [], set()
        base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        for path in sorted(files):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts)):  # the directories on the way
                directory = base + "/".join(parts[:depth])
                if directory not in seen and (recursive or depth == 1):
                    seen.add(directory)
                    out.append({"type": "directory", "oid": SHA, "size": 0, "path": directory})
            if recursive or len(parts) == 1:
                out.append(_file_entry(path, files[path]))
        return out


def _file_entry(path: str, content: bytes) -> dict:
    return {"type": "file", "oid": hashlib.sha1(content).hexdigest(), "size": len(content), "path": path}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, value: object) -> None:
            self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def _error(self, status: int, code: str) -> None:
            body = json.dumps({"error": code}).encode()
            self._send(status, body, {"X-Error-Code": code, "X-Error-Message": code})

        def do_HEAD(self) -> None:
            self.do_GET()

        def _user(self) -> dict | None:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return hub.tokens.get(token)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            hub.requests.append(f"{self.command} {url.path}")
            if url.path == "/api/whoami-v2":
                return self._whoami()
            if match := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", url.path):
                return self._file(match[1], unquote(match[2]), unquote(match[3]))
            if match := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", url.path):
                if match[1] not in hub.repos:
                    return self._error(404, "RepoNotFound")
                files = hub.repos[match[1]]
                siblings = [{"rfilename": p, "size": len(c)} for p, c in sorted(files.items())]
                return self._json(
                    {"id": match[1], "sha": SHA, "private": match[1] in hub.private, "siblings": siblings}
                )
            if match := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", url.path):
                if match[1] not in hub.repos:
                    return self._error(404, "RepoNotFound")
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
                return self._json(hub.entries(match[1], unquote(match[3] or ""), recursive))
            self._error(404, "NotFound")

        def do_POST(self) -> None:
            url = urlparse(self.path)
            hub.requests.append(f"POST {url.path}")
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            if url.path == "/api/repos/create":
                return self._create(json.loads(body))
            if url.path == "/api/validate-yaml":
                return self._json({"errors": [], "warnings": []})
            if match := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", url.path):
                if (refused := self._refused(match[1])) is not None:
                    return self._error(*refused)
                if match[2] == "preupload":  # every file as a regular git blob: no LFS round trip
                    files = json.loads(body)["files"]
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                    return self._json({"files": modes})
                return self._commit(match[1], body)
            match = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", url.path)
            if not match or match[1] not in hub.repos:
                return self._error(404, "RepoNotFound")
            if self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(body).get("paths", [])
            else:
                paths = parse_qs(body).get("paths", [])
            files = hub.repos[match[1]]
            out = [_file_entry(p, files[p]) for p in paths if p in files]
            out += [e for p in paths if p not in files for e in hub.entries(match[1]) if e["path"] == p]
            self._json(out)

        def _whoami(self) -> None:
            if (user := self._user()) is None:
                return self._error(401, "Invalid credentials in Authorization header")
            orgs = [{"name": org} for org in user.get("orgs", [])]
            role = user.get("role", "write")
            self._json(
                {"type": "user", "name": user["name"], "orgs": orgs, "auth": {"accessToken": {"role": role}}}
            )

        def _refused(self, repo: str) -> tuple[int, str] | None:
            """Why a write to `repo` is refused, as the Hub answers it; None when it is allowed."""
            user = self._user()
            if hub.refuse:
                return hub.refuse
            if user is None:
                return 401, "Invalid credentials in Authorization header"
            if user.get("role", "write") != "write" or repo.split("/")[0] not in [
                user["name"],
                *user.get("orgs", []),
            ]:
                return 403, "You don't have the rights to write to this namespace"
            return None

        def _create(self, payload: dict) -> None:
            repo = f"{payload.get('organization') or (self._user() or {}).get('name')}/{payload['name']}"
            if (refused := self._refused(repo)) is not None:
                return self._error(*refused)
            if repo in hub.repos:
                return self._error(409, "You already created this dataset repo")
            hub.repos[repo] = {}
            if payload.get("visibility") == "private" or payload.get("private"):
                hub.private.add(repo)
            self._json({"url": f"{hub.url}/datasets/{repo}", "name": repo})

        def _commit(self, repo: str, body: str) -> None:
            if repo not in hub.repos:
                return self._error(404, "RepoNotFound")
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    content = value["content"].encode()
                    data = base64.b64decode(content) if value.get("encoding") == "base64" else content
                    hub.repos[repo][value["path"]] = data
            self._json({"commitUrl": f"{hub.url}/datasets/{repo}/commit/{SHA}", "commitOid": SHA})

        def _file(self, repo: str, revision: str, path: str) -> None:
            if repo not in hub.repos:
                return self._error(404, "RepoNotFound")
            if revision not in ("main", SHA):
                return self._error(404, "RevisionNotFound")
            if path not in hub.repos[repo]:
                return self._error(404, "EntryNotFound")
            content = hub.repos[repo][path]
            headers = {
                "X-Repo-Commit": SHA,
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
            }
            if match := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                start, stop = int(match[1]), int(match[2] or len(content) - 1)
                part = content[start : stop + 1]
                headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{len(content)}"
                return self._send(206, part, headers)
            self._send(200, content, headers)

    return Handler
