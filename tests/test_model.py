"""The base-model download, against a fake Hub on loopback (the real Hub is out of reach in CI)."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bespoke import model
from bespoke.errors import BespokeError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB standing in for sd_xl_base_1.0.safetensors
ETAG = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0" * 40


class FakeHub(BaseHTTPRequestHandler):
    """Serves one file the way huggingface.co's /resolve/ endpoint does, with Range support."""

    ranges: list[str] = []

    def _headers(self, start: int):
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{ETAG}"')
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()

    def do_HEAD(self):
        if not self.path.endswith(f"/resolve/main/{model.DEFAULT_FILE}"):
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self.send_response(200)
        self._headers(0)

    def do_GET(self):
        rng = self.headers.get("Range")
        FakeHub.ranges.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if start else 200)
        self._headers(start)
        self.wfile.write(PAYLOAD[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeHub.ranges = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_default_repo_downloads_the_single_file_into_the_cache(hub, tmp_path):
    path = Path(model.resolve(model.DEFAULT_REPO, cache_dir=str(tmp_path), endpoint=hub))
    assert path.name == model.DEFAULT_FILE and path.read_bytes() == PAYLOAD
    assert tmp_path in path.parents
    assert model.cached(model.DEFAULT_REPO, str(tmp_path)) == path
    # second time: from the cache, no request
    FakeHub.ranges = []
    assert Path(model.resolve(model.DEFAULT_REPO, cache_dir=str(tmp_path), endpoint=hub)) == path
    assert FakeHub.ranges == []


def test_interrupted_download_resumes_with_a_range_request(hub, tmp_path):
    blobs = tmp_path / "models--stabilityai--stable-diffusion-xl-base-1.0" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{ETAG}.incomplete").write_bytes(PAYLOAD[:300_000])
    path = Path(model.resolve(model.DEFAULT_REPO, cache_dir=str(tmp_path), endpoint=hub))
    assert path.read_bytes() == PAYLOAD
    assert FakeHub.ranges == ["bytes=300000-"]


def test_local_path_and_other_repos_pass_through(tmp_path):
    f = tmp_path / "my.safetensors"
    f.write_bytes(b"x")
    assert model.resolve(str(f)) == str(f)
    assert model.resolve("someone/sdxl-diffusers-folder") == "someone/sdxl-diffusers-folder"
    assert model.hub_reference("owner/repo/sub/model.safetensors") == ("owner/repo", "sub/model.safetensors")


def test_missing_file_is_a_one_line_error(hub, tmp_path):
    with pytest.raises(BespokeError) as e:
        model.resolve("owner/repo/missing.safetensors", cache_dir=str(tmp_path), endpoint=hub)
    assert "owner/repo/missing.safetensors" in e.value.what


def test_offline_without_cache_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(BespokeError) as e:
        model.resolve(model.DEFAULT_REPO, cache_dir=str(tmp_path))
    assert "HF_HUB_OFFLINE" in e.value.what and "pretrained_model_name_or_path" in e.value.fix
