"""A fake Hugging Face Hub on loopback: the endpoints huggingface_hub's create_repo and upload_folder call
(repo create, YAML validation, repo info, preupload, the LFS batch API and its upload URL, commit), recording what came."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from tests.fakes import serving

LFS_SUFFIXES = (".safetensors", ".png")


class FakeHub:
    def __init__(self, fail_commit: bool = False):
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool}
        self.commits: list[dict] = []  # {"repo", "summary", "files": {path: bytes or ("lfs", oid, size)}}
        self.lfs: dict[str, bytes] = {}  # oid -> bytes
        self.auth: set[str] = set()  # Authorization headers seen
        self.requests: list[str] = []
        self.validated: list[dict] = []  # model card front matter the Hub was asked to check
        self.fail_commit = fail_commit
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _send(self, code: int, obj=None):
                data = json.dumps(obj if obj is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str):
                body = self._body()
                with hub._lock:
                    hub.requests.append(f"{method} {self.path.split('?')[0]}")
                    if auth := self.headers.get("Authorization"):
                        hub.auth.add(auth)
                return hub.handle(method, self.path.split("?")[0], body, self)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_PUT(self):
                self._route("PUT")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, method, path, body, h):
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req.get('organization') or 'me'}/{req['name']}"
            if repo in self.repos:
                return h._send(409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"})
            self.repos[repo] = {"private": req.get("private")}
            return h._send(200, {"url": f"{self.url}/{repo}", "name": repo})
        if method == "POST" and path == "/api/validate-yaml":  # the Hub checks a README's front matter
            content = json.loads(body)["content"]
            try:
                meta = yaml.safe_load(content.split("---\n", 2)[1]) if content.startswith("---\n") else {}
            except yaml.YAMLError as e:
                return h._send(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
            self.validated.append(meta)
            return h._send(200, {"warnings": []})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path):
            if m[1] not in self.repos:
                return h._send(404, {"error": "Repository not found"})
            return h._send(200, {"id": m[1], "sha": "0" * 40, "private": self.repos[m[1]]["private"],
                                 "xetEnabled": False})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/[^/]+", path):
            files = json.loads(body)["files"]
            return h._send(200, {"files": [{"path": f["path"], "shouldIgnore": False,
                                            "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular"}
                                           for f in files]})
        if m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            objs = json.loads(body)["objects"]
            return h._send(200, {"objects": [
                {"oid": o["oid"], "size": o["size"],
                 "actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}}} for o in objs]})
        if m := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path):
            if hashlib.sha256(body).hexdigest() != m[1]:
                return h._send(400, {"error": "sha256 mismatch"})
            self.lfs[m[1]] = body
            return h._send(200, {})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/[^/]+", path):
            if self.fail_commit:
                return h._send(500, {"error": "Internal Error"})
            commit = {"repo": m[1], "summary": None, "files": {}}
            for line in body.decode().splitlines():
                item = json.loads(line)
                v = item["value"]
                if item["key"] == "header":
                    commit["summary"] = v["summary"]
                elif item["key"] == "file":
                    commit["files"][v["path"]] = base64.b64decode(v["content"])
                elif item["key"] == "lfsFile":
                    if v["oid"] not in self.lfs:
                        return h._send(422, {"error": f"LFS object {v['oid']} was never uploaded"})
                    commit["files"][v["path"]] = self.lfs[v["oid"]]
            self.commits.append(commit)
            return h._send(200, {"commitUrl": f"{self.url}/{m[1]}/commit/{len(self.commits):040x}",
                                 "commitOid": f"{len(self.commits):040x}"})
        return h._send(404, {"error": f"fake hub: no route for {method} {path}"})

    @contextmanager
    def running(self):
        with serving(self.server):
            yield self
