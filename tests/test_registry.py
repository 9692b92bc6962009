"""Checkpoint registry and download, without the network.

URL downloads run against an ``http.server`` on 127.0.0.1 in a thread that understands ``Range``;
the Hugging Face path runs against a monkeypatched ``huggingface_hub.hf_hub_download``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from demo.errors import CheckpointError
from demo.weights import registry
from demo.weights.registry import CheckpointEntry, CheckpointSource

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes: several reads, distinct content at every offset
TEST_ID = "test-local-128"


class _Server:
    """Serves PAYLOAD at /file.pkl; records each request's Range header."""

    def __init__(self) -> None:
        self.ranges: list[str | None] = []
        self.ignore_range = False
        self.status_override: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server API name
                server.ranges.append(self.headers.get("Range"))
                if server.status_override is not None:
                    self.send_error(server.status_override)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and not server.ignore_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.pkl"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_dns(monkeypatch):
    """The Hugging Face path first checks that the endpoint answers; no network in tests (unless a test says so)."""
    monkeypatch.setattr(registry, "_endpoint_answers", lambda url, timeout_s=3.0: True)


@pytest.fixture
def ckpt_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv(registry.CHECKPOINTS_DIR_ENV, str(folder))
    return folder


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.pkl"  # nothing listens there: connection refused at once


def _register(monkeypatch, *sources: CheckpointSource, **overrides) -> CheckpointEntry:
    fields = {
        "id": TEST_ID,
        "family": "eg3d",
        "file_name": "local128.pkl",
        "description": "test entry",
        "sources": sources,
        "licence": "test licence",
        "licence_url": "https://example.invalid/licence",
        "size_bytes": len(PAYLOAD),
        "sha256": None,
        "focal_length": 4.2647,
        "config_preset": "ffhq512",
    }
    fields.update(overrides)
    entry = CheckpointEntry(**fields)
    monkeypatch.setitem(registry._ENTRIES, entry.id, entry)
    return entry


# --- registry contents ----------------------------------------------------------------------------


def test_known_ids_and_facts():
    ids = [entry.id for entry in registry.list_entries()]
    assert ids == [
        "eg3d-ffhq512-128", "eg3d-ffhqrebalanced512-128", "eg3d-afhqcats512-128", "eg3d-shapenetcars128-64",
        "panohead-easy-khair-180",
    ]
    panohead = registry.get_entry("panohead-easy-khair-180")
    assert panohead.family == "panohead" and panohead.config_preset == "panohead512"
    assert [s.location for s in panohead.sources] == ["camenduru/PanoHead", "dylanebert/PanoHead"]
    assert panohead.file_name == "easy-khair-180-gpc0.8-trans10-025000.pkl" and "CC BY-NC-SA 4.0" in panohead.licence
    for entry in registry.list_entries():
        if entry.family != "eg3d":
            continue
        assert entry.id == "eg3d-" + entry.file_name.removesuffix(".pkl")
        ngc = "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/" + entry.file_name
        assert ngc in entry.urls
        assert entry.licence_url == "https://github.com/NVlabs/eg3d/blob/main/LICENSE.txt"
        assert "non-commercial" in entry.licence
        assert entry.sha256 is None  # no full hash is published; none may be invented
    rebalanced = registry.get_entry("eg3d-ffhqrebalanced512-128")
    assert rebalanced.sources[0] == CheckpointSource(
        "huggingface", "gwang-kim/datid3d-finetuned-eg3d-models", "finetuned_models/nvidia_ffhqrebalanced512-128.pkl"
    )
    assert rebalanced.size_bytes == 377_644_956
    assert rebalanced.sha256_prefix == "7f418947"
    assert registry.get_entry("eg3d-shapenetcars128-64").focal_length == pytest.approx(1.7074)
    assert registry.get_entry("eg3d-shapenetcars128-64").config_preset == "shapenet128"
    assert registry.get_entry("eg3d-afhqcats512-128").config_preset == "afhq512"


def test_config_presets_exist():
    from demo.config import GeneratorConfig

    for entry in registry.list_entries():
        config = getattr(GeneratorConfig, entry.config_preset)()
        assert config.focal_length == pytest.approx(entry.focal_length)


def test_unknown_id_lists_known_ids():
    with pytest.raises(CheckpointError) as info:
        registry.get_entry("eg3d-nope")
    message = str(info.value)
    assert "eg3d-nope" in message
    for entry in registry.list_entries():
        assert entry.id in message


def test_find_entry_by_file_name():
    assert registry.find_entry_by_file_name("ffhq512-128.pkl").id == "eg3d-ffhq512-128"
    assert registry.find_entry_by_file_name("nvidia_ffhqrebalanced512-128.pkl").id == "eg3d-ffhqrebalanced512-128"
    assert registry.find_entry_by_file_name("other.pkl") is None


def test_checkpoints_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.CHECKPOINTS_DIR_ENV, str(tmp_path))
    assert registry.checkpoints_dir() == tmp_path
    assert registry.original_path("eg3d-ffhq512-128") == tmp_path / "original" / "ffhq512-128.pkl"
    monkeypatch.delenv(registry.CHECKPOINTS_DIR_ENV)
    assert registry.checkpoints_dir() == Path(registry.__file__).resolve().parents[2] / "checkpoints"


# --- URL downloads --------------------------------------------------------------------------------


def test_full_download_with_progress(server, ckpt_dir, monkeypatch):
    _register(monkeypatch, CheckpointSource("url", server.url))
    calls: list[tuple[float, str]] = []
    path = registry.download(TEST_ID, progress=lambda f, m: calls.append((f, m)))
    assert path == ckpt_dir / "original" / "local128.pkl"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name(path.name + ".part").exists()
    assert server.ranges == [None]
    fractions = [f for f, _ in calls]
    assert fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert any("MB" in m for _, m in calls)


def test_resume_from_part_file(server, ckpt_dir, monkeypatch):
    _register(monkeypatch, CheckpointSource("url", server.url))
    dest = registry.original_path(TEST_ID)
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(PAYLOAD[:1000])
    path = registry.download(TEST_ID)
    assert server.ranges == ["bytes=1000-"]
    assert path.read_bytes() == PAYLOAD
    assert not dest.with_name(dest.name + ".part").exists()


def test_resume_when_server_ignores_range(server, ckpt_dir, monkeypatch):
    server.ignore_range = True
    _register(monkeypatch, CheckpointSource("url", server.url), size_bytes=None)
    dest = registry.original_path(TEST_ID)
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(b"garbage that must not be kept")
    assert registry.download(TEST_ID).read_bytes() == PAYLOAD


def test_size_mismatch_leaves_no_file(server, ckpt_dir, monkeypatch):
    _register(monkeypatch, CheckpointSource("url", server.url), size_bytes=len(PAYLOAD) + 1)
    with pytest.raises(CheckpointError) as info:
        registry.download(TEST_ID)
    dest = registry.original_path(TEST_ID)
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()
    assert "size" in str(info.value)


def test_sha256_checked(server, ckpt_dir, monkeypatch):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    _register(monkeypatch, CheckpointSource("url", server.url), sha256_prefix=digest[:8])
    assert registry.download(TEST_ID).read_bytes() == PAYLOAD

    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    _register(monkeypatch, CheckpointSource("url", server.url), sha256=wrong)
    registry.original_path(TEST_ID).unlink()
    with pytest.raises(CheckpointError, match="sha256"):
        registry.download(TEST_ID)
    assert not registry.original_path(TEST_ID).exists()


def test_present_file_returned_without_request(server, ckpt_dir, monkeypatch):
    _register(monkeypatch, CheckpointSource("url", server.url))
    dest = registry.original_path(TEST_ID)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    calls = []
    assert registry.download(TEST_ID, progress=lambda f, m: calls.append(f)) == dest
    assert server.ranges == []
    assert calls[-1] == 1.0


def test_present_file_of_wrong_size_is_replaced(server, ckpt_dir, monkeypatch):
    _register(monkeypatch, CheckpointSource("url", server.url))
    dest = registry.original_path(TEST_ID)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    assert registry.download(TEST_ID).read_bytes() == PAYLOAD


def test_dest_dir(server, tmp_path, monkeypatch):
    _register(monkeypatch, CheckpointSource("url", server.url))
    path = registry.download(TEST_ID, dest_dir=tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "local128.pkl"
    assert path.read_bytes() == PAYLOAD


def test_http_error_then_next_source(server, ckpt_dir, monkeypatch):
    failing = _Server()
    failing.status_override = 403
    try:
        _register(monkeypatch, CheckpointSource("url", failing.url), CheckpointSource("url", server.url))
        assert registry.download(TEST_ID).read_bytes() == PAYLOAD
        assert failing.ranges == [None]
    finally:
        failing.close()


# --- offline and Hugging Face ---------------------------------------------------------------------


def test_offline_error_says_how_to_provide_file(ckpt_dir, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    url = _closed_port_url()
    _register(
        monkeypatch,
        CheckpointSource("huggingface", "someone/mirror", "sub/local128.pkl"),
        CheckpointSource("url", url),
    )
    with pytest.raises(CheckpointError) as info:
        registry.download(TEST_ID)
    message = str(info.value)
    dest = registry.original_path(TEST_ID)
    assert str(dest) in message
    assert "convert" in message
    assert url in message
    assert "someone/mirror" in message
    assert "HF_TOKEN" not in message  # a connection failure is not a gated mirror
    assert "--model tiny" in message  # what to run meanwhile (README quick start without weights)
    assert not dest.exists()


def test_real_entry_offline_message(ckpt_dir, monkeypatch):
    import huggingface_hub

    def gated(*args, **kwargs):
        raise OSError("401 Client Error")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    closed = _closed_port_url()
    entry = registry.get_entry("eg3d-ffhqrebalanced512-128")
    redirected = dataclasses.replace(entry, sources=(entry.sources[0], CheckpointSource("url", closed)))
    monkeypatch.setitem(registry._ENTRIES, entry.id, redirected)
    with pytest.raises(CheckpointError) as info:
        registry.download(entry.id)
    message = str(info.value)
    assert str(registry.original_path(entry.id)) in message
    assert "python -m demo convert /path/to/ffhqrebalanced512-128.pkl" in message


def test_huggingface_source(ckpt_dir, tmp_path, monkeypatch):
    import huggingface_hub

    seen = {}

    def fake_hf_hub_download(repo_id, filename, **kwargs):
        seen.update(repo_id=repo_id, filename=filename, token=kwargs.get("token"))
        assert kwargs.get("local_files_only") is False
        blob = tmp_path / "hf_cache" / "blob"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(PAYLOAD)
        return str(blob)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    _register(monkeypatch, CheckpointSource("huggingface", "someone/mirror", "sub/mirror_local128.pkl"))
    path = registry.download(TEST_ID, token="hf_secret")
    assert path == registry.original_path(TEST_ID)
    assert path.read_bytes() == PAYLOAD
    assert seen == {"repo_id": "someone/mirror", "filename": "sub/mirror_local128.pkl", "token": "hf_secret"}
    assert (tmp_path / "hf_cache" / "blob").read_bytes() == PAYLOAD  # the cache copy is untouched


def test_huggingface_failure_falls_back_to_url(server, ckpt_dir, monkeypatch):
    import huggingface_hub

    def gated(*args, **kwargs):
        raise OSError("403 Forbidden")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    _register(
        monkeypatch, CheckpointSource("huggingface", "someone/mirror", "x.pkl"), CheckpointSource("url", server.url)
    )
    assert registry.download(TEST_ID).read_bytes() == PAYLOAD


def test_huggingface_offline_uses_cache_only(ckpt_dir, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(registry, "_endpoint_answers", lambda url, timeout_s=3.0: False)
    blob = tmp_path / "hf_cache" / "blob"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(PAYLOAD)

    def cache_only(repo_id, filename, **kwargs):
        assert kwargs["local_files_only"] is True  # no connection attempts (and no retries) offline
        return str(blob)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    _register(monkeypatch, CheckpointSource("huggingface", "someone/mirror", "x.pkl"))
    assert registry.download(TEST_ID).read_bytes() == PAYLOAD


def test_hub_errors_name_the_endpoint_and_say_what_happened(ckpt_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://hf-mirror.example")
    _register(monkeypatch, CheckpointSource("huggingface", "someone/mirror", "x.pkl"))
    failures = {
        "404": (OSError("404 Client Error: Not Found for url"), "not found at https://hf-mirror.example", False),
        "401": (OSError("401 Client Error: Unauthorized"), "access denied by https://hf-mirror.example", True),
    }
    for label, (error, expected, gated) in failures.items():
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
        with pytest.raises(CheckpointError) as info:
            registry.download(TEST_ID)
        message = str(info.value)
        assert expected in message, label
        assert "https://hf-mirror.example/someone/mirror/blob/main/x.pkl" in message and "huggingface.co" not in message
        assert "offline" not in message and (registry.HF_TOKEN_ENV in message) == gated, label


def test_an_endpoint_that_does_not_answer_fails_fast(ckpt_dir, monkeypatch):
    import time

    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.undo()  # the real reachability check this time
    monkeypatch.setenv(registry.CHECKPOINTS_DIR_ENV, str(ckpt_dir))
    closed = _closed_port_url()
    monkeypatch.setattr(constants, "ENDPOINT", closed)

    def cache_only(repo_id, filename, **kwargs):
        assert kwargs["local_files_only"] is True  # no connection attempts, no 25 s of retries
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    _register(monkeypatch, CheckpointSource("huggingface", "someone/mirror", "x.pkl"))
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        registry.download(TEST_ID)
    assert time.perf_counter() - started < 5
    assert f"{closed} does not answer" in str(info.value)
