"""A small Hugging Face Hub-compatible HTTP server for tests (127.0.0.1, ephemeral port, in-memory).

It implements the endpoints that huggingface_hub's own client calls for the workflow we support:
create repo, create branch, README YAML validation, preupload, NDJSON commit (regular files inline as
base64, deletions, pull requests as `refs/pr/N`), model info at a revision, tree listing, and
`resolve` (HEAD + GET, with `X-Repo-Commit`, `ETag`, `Content-Length`, byte ranges).

Every file is stored as a regular git blob: preupload answers `"regular"` for files up to
`max_regular_bytes` and refuses larger ones (HTTP 413), so the client never takes its LFS/Xet path
(which needs a storage backend this server does not have). Test checkpoints are a few kB.

Private repos and all writes need `Authorization: Bearer <token>` with a token from `tokens`; any other
token is treated as no token.

Fault modes for download tests (all off by default): `faults[path]` is a queue of what the next GETs of that
file do: "close" sends the full Content-Length, half the body, then closes the connection (the client sees the
connection drop mid-file); "truncate" sends the first half as if it were the whole file (a short
Content-Length). `tamper[path]` is served on GET in place of the stored bytes while the tree, ETag and HEAD
still describe the stored file (a corrupting mirror or proxy). Files whose names end in `lfs_suffixes` are
advertised as LFS files (tree `lfs.oid` = SHA-256, ETag = SHA-256), as the Hub does for weights.

    with HubServer() as hub:
        HfApi(endpoint=hub.endpoint, token=hub.token).create_repo("org/name")
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what `git hash-object` prints), which the Hub uses as a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    title: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # branch / refs/pr/N -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    n_prs: int = 0

    def commit(self, parent: str | None, files: dict[str, bytes], title: str) -> Commit:
        digest = hashlib.sha1()
        digest.update((parent or "").encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        digest.update(title.encode() + str(time.time_ns()).encode())
        oid = digest.hexdigest()
        c = Commit(oid, parent, dict(files), title, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        self.commits[oid] = c
        return c

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        return self.commits.get(revision)  # a full commit oid


class HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, commit: str | None = None, **body: Any
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.body = status, message, code, commit, body


class HubServer:
    """Start with `start()` or `with HubServer() as hub:`; `hub.endpoint` is the value for HF_ENDPOINT."""

    def __init__(self, tokens: tuple[str, ...] = ("hf_test_token",), max_regular_bytes: int = 10 * 1024 * 1024):
        self.tokens = set(tokens)
        self.token = tokens[0]
        self.max_regular_bytes = max_regular_bytes
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) log, for tests that count calls
        self.faults: dict[str, list[str]] = {}  # file path -> "close" / "truncate" for its next GETs
        self.tamper: dict[str, bytes] = {}  # file path -> bytes served on GET instead of the stored ones
        self.lfs_suffixes: tuple[str, ...] = ()  # files advertised as LFS (sha256 oid and ETag)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- request handling (called with the parsed request; raises HubError) ----

    def handle(self, method: str, parts: list[str], query: dict[str, list[str]], headers: Any, body: bytes):
        with self._lock:
            self.requests.append((method, "/" + "/".join(parts)))
            token = self._token(headers)
            if parts[:3] == ["api", "repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body or b"{}"), token)
            if parts[:2] == ["api", "validate-yaml"] and method == "POST":
                return self._validate_yaml(json.loads(body or b"{}"))
            if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models":
                repo = self._repo(parts[2] + "/" + parts[3], token)
                rest = parts[4:]
                if not rest and method == "GET":
                    return self._info(repo, "main")
                if rest[:1] == ["revision"] and len(rest) == 2 and method == "GET":
                    return self._info(repo, rest[1])
                if rest[:1] == ["tree"] and len(rest) >= 2 and method == "GET":
                    return self._tree(repo, rest[1], "/".join(rest[2:]), query)
                if rest[:1] == ["preupload"] and len(rest) == 2 and method == "POST":
                    self._need_write(token)
                    return self._preupload(repo, rest[1], json.loads(body or b"{}"), query)
                if rest[:1] == ["commit"] and len(rest) == 2 and method == "POST":
                    self._need_write(token)
                    return self._commit(repo, rest[1], body, query)
                if rest[:1] == ["branch"] and len(rest) == 2 and method == "POST":
                    self._need_write(token)
                    return self._create_branch(repo, rest[1], json.loads(body or b"{}"))
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                repo = self._repo(parts[0] + "/" + parts[1], token)
                return self._resolve(repo, parts[3], "/".join(parts[4:]), headers, method)
            raise HubError(404, f"{method} /{'/'.join(parts)} is not implemented by the test Hub server")

    def _token(self, headers: Any) -> str | None:
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        token = auth[len("Bearer "):]
        # An unknown token reads as anonymous (a developer's own saved HF token must not break tests);
        # writes and private repos then fail as they would for anyone without access.
        return token if token in self.tokens else None

    @staticmethod
    def _need_write(token: str | None) -> None:
        if token is None:
            raise HubError(401, "You must be authenticated to write to a repository (pass a token)")

    def _repo(self, repo_id: str, token: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and token is None):
            # The Hub answers a private repo without credentials exactly like a missing one.
            raise HubError(401 if repo is not None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_or_404(self, repo: Repo, revision: str) -> Commit:
        c = repo.resolve(revision)
        if c is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return c

    def _create_repo(self, payload: dict, token: str | None):
        self._need_write(token)
        if payload.get("type", "model") != "model":
            raise HubError(400, "the test Hub server only hosts model repos")
        name, org = payload.get("name"), payload.get("organization")
        if not name or not org:
            raise HubError(400, "repo id must be 'org/name'")
        repo_id = f"{org}/{name}"
        if repo_id in self.repos:
            # The Hub's 409 carries the repo's url, which create_repo(exist_ok=True) returns.
            raise HubError(409, "You already created this model repo", url=f"{self.endpoint}/{repo_id}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_id, private)
        first = repo.commit(None, {".gitattributes": GITATTRIBUTES}, "initial commit")
        repo.refs["main"] = first.oid
        self.repos[repo_id] = repo
        return 200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id}, {}

    @staticmethod
    def _validate_yaml(payload: dict):
        content = payload.get("content", "")
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end < 0:
                return 400, {"errors": [{"message": "metadata block is not closed by '---'"}]}, {}
            try:
                meta = yaml.safe_load(content[3:end])
            except yaml.YAMLError as err:
                return 400, {"errors": [{"message": f"invalid YAML: {err}"}]}, {}
            if meta is not None and not isinstance(meta, dict):
                return 400, {"errors": [{"message": "metadata must be a mapping"}]}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _info(self, repo: Repo, revision: str):
        c = self._commit_or_404(repo, revision)
        return 200, {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": c.oid,
            "private": repo.private,
            "lastModified": c.date,
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(c.files)],
        }, {}

    def _tree(self, repo: Repo, revision: str, prefix: str, query: dict[str, list[str]]):
        c = self._commit_or_404(repo, revision)
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        files, folders = [], set()
        for path, data in sorted(c.files.items()):
            if not path.startswith(base):
                continue
            rel = path[len(base):].split("/")
            for depth in range(1, len(rel)):
                if recursive or depth == 1:
                    folders.add(base + "/".join(rel[:depth]))
            if recursive or len(rel) == 1:
                entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
                if path.endswith(self.lfs_suffixes) and self.lfs_suffixes:
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                files.append(entry)
        if base and not files and not folders:
            raise HubError(404, f"{prefix} does not exist at {revision}", "EntryNotFound")
        tree_oid = hashlib.sha1(b"tree").hexdigest()
        return 200, [{"type": "directory", "oid": tree_oid, "size": 0, "path": p} for p in sorted(folders)] + files, {}

    def _preupload(self, repo: Repo, revision: str, payload: dict, query: dict[str, list[str]]):
        c = self._commit_or_404(repo, "main" if "create_pr" in query else revision)
        out = []
        for f in payload.get("files", []):
            if f["size"] > self.max_regular_bytes:
                raise HubError(
                    413, f"{f['path']}: {f['size']} bytes is over the test server's {self.max_regular_bytes}-byte "
                    "limit for regular files (it has no LFS/Xet storage)"
                )
            old = c.files.get(f["path"])
            out.append({
                "path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                "oid": git_blob_sha1(old) if old is not None else None,
            })
        return 200, {"files": out, "commitOid": c.oid}, {}

    def _create_branch(self, repo: Repo, branch: str, payload: dict):
        if branch in repo.refs:
            raise HubError(409, f"Reference already exists: {branch}")
        c = self._commit_or_404(repo, payload.get("startingPoint") or "main")
        repo.refs[branch] = c.oid
        return 200, {}, {}

    def _commit(self, repo: Repo, revision: str, body: bytes, query: dict[str, list[str]]):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        pr_url = None
        if "create_pr" in query:
            repo.n_prs += 1
            base = self._commit_or_404(repo, revision)
            revision = f"refs/pr/{repo.n_prs}"
            repo.refs[revision] = base.oid
            pr_url = f"{self.endpoint}/{repo.repo_id}/discussions/{repo.n_prs}"
        if revision not in repo.refs:
            raise HubError(404, f"Invalid rev id: {revision} (create the branch first)", "RevisionNotFound")
        head = repo.commits[repo.refs[revision]]
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            raise HubError(412, f"parentCommit {header['parentCommit']} is not the head of {revision} ({head.oid})")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"the test Hub server does not support {key!r} operations (no LFS/Xet storage)")
        c = repo.commit(head.oid, files, header.get("summary", ""))
        repo.refs[revision] = c.oid
        return 200, {
            "commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{c.oid}",
            "commitOid": c.oid,
            "pullRequestUrl": pr_url,
        }, {}

    def _resolve(self, repo: Repo, revision: str, path: str, headers: Any, method: str = "GET"):
        c = self._commit_or_404(repo, revision)
        if path not in c.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=c.oid)
        data = c.files[path]
        lfs = bool(self.lfs_suffixes) and path.endswith(self.lfs_suffixes)
        etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
        fault = None
        if method == "GET":
            if path in self.tamper:
                data = self.tamper[path]
            if self.faults.get(path):
                fault = self.faults[path].pop(0)
        extra = {
            "X-Repo-Commit": c.oid,
            "ETag": f'"{etag}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        status = 200
        rng = headers.get("Range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[len("bytes="):].partition("-")
            start = int(start_s or 0)
            end = int(end_s) if end_s else len(data) - 1
            if start >= len(data):
                raise HubError(416, f"range {rng} is outside {path} ({len(data)} bytes)")
            extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        if fault == "truncate":
            return status, data[: len(data) // 2], extra
        if fault == "close":
            return status, _CutBody(data, len(data) // 2), extra
        return status, data, extra


@dataclass
class _CutBody:
    """A body announced in full (Content-Length) of which only `send` bytes are written before the connection closes."""

    data: bytes
    send: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr access log
        return

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        # Split before unquoting: a revision like refs%2Fpr%2F1 is one path segment.
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, payload, extra = self.hub.handle(method, parts, parse_qs(url.query), self.headers, body)
        except HubError as err:
            status, payload = err.status, {"error": err.message, **err.body}
            extra = {"X-Error-Message": err.message}
            if err.code:
                extra["X-Error-Code"] = err.code
            if err.commit:
                extra["X-Repo-Commit"] = err.commit
        cut = payload if isinstance(payload, _CutBody) else None
        if cut is not None:
            payload = cut.data
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for key, value in extra.items():
            self.send_header(key, value.encode("ascii", "replace").decode())  # headers must be latin-1
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cut is not None and method != "HEAD":
            self.wfile.write(data[: cut.send])
            self.wfile.flush()
            self.close_connection = True
            return
        if method != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")
