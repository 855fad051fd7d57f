"""amed.download.fetch against a local HTTP server (127.0.0.1 only, no real network)."""

import hashlib
import http.server
import os
import threading

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from amed import download  # noqa: E402
from amed.download import DownloadError, fetch, read_sidecar  # noqa: E402

BODY = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(BODY).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    hits: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path.startswith("/ok/"):
            self._send(BODY)
        elif self.path.startswith("/other/"):
            self._send(BODY[::-1])
        elif self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.wfile.flush()
            self.close_connection = True
        elif self.path.startswith("/flaky/") and Handler.hits[self.path] == 1:
            self.send_error(503, "busy")
        elif self.path.startswith("/flaky/"):
            self._send(BODY)
        elif self.path.startswith("/500/"):
            self.send_error(500, "boom")
        else:
            self.send_error(404, "nope")

    def _send(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _trusted_files(cache):
    """Files a later run would use: anything that is not a temp/corrupt leftover."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith((".part", ".corrupt")))


def _fetch(url, cache, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5)
    return fetch(url, cache, **kw)


def test_success_records_sha_and_reuses_cache(server, tmp_path, capsys):
    url = f"{server}/ok/model.pkl"
    path = _fetch(url, tmp_path, license="TEST-LICENCE-1")
    assert path == tmp_path / "model.pkl" and path.read_bytes() == BODY
    assert read_sidecar(path) == SHA
    assert list(tmp_path.glob("*.part")) == []
    hits = Handler.hits[url.removeprefix(server)]
    assert _fetch(url, tmp_path, license="TEST-LICENCE-1") == path  # from cache
    assert Handler.hits[url.removeprefix(server)] == hits
    assert capsys.readouterr().err.count("TEST-LICENCE-1") == 1  # licence printed once
    # Pinned hash overrides the record and is accepted when it matches.
    assert _fetch(url, tmp_path, sha256=SHA.upper()) == path


def test_cached_file_tampered_is_detected(server, tmp_path):
    url = f"{server}/ok/tamper.bin"
    path = _fetch(url, tmp_path)
    path.write_bytes(b"evil")
    with pytest.raises(DownloadError, match="hash mismatch for cached"):
        _fetch(url, tmp_path, offline=True)
    # Online: the bad copy is moved aside and a verified copy replaces it.
    assert _fetch(url, tmp_path).read_bytes() == BODY
    assert (tmp_path / "tamper.bin.corrupt").read_bytes() == b"evil"


def test_wrong_pinned_hash(server, tmp_path):
    url = f"{server}/ok/pinned.bin"
    with pytest.raises(DownloadError, match=r"hash mismatch for http://127\.0\.0\.1:\d+/ok/pinned\.bin"):
        _fetch(url, tmp_path, sha256="0" * 64)
    assert _trusted_files(tmp_path) == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="64 hex"):
        _fetch(url, tmp_path, sha256="abc")


def test_server_content_changed_since_first_download(server, tmp_path):
    (tmp_path / "x.bin.sha256").write_text(f"{SHA}  x.bin\n")  # recorded by an earlier run
    with pytest.raises(DownloadError, match="hash mismatch"):
        _fetch(f"{server}/other/x.bin", tmp_path)
    assert not (tmp_path / "x.bin").exists()


def test_truncated_body(server, tmp_path):
    url = f"{server}/truncated/t.bin"
    with pytest.raises(DownloadError, match=r"truncated download of .*/truncated/t\.bin.*(1000 of 16384|1000 bytes)"):
        _fetch(url, tmp_path, retries=2)
    assert Handler.hits["/truncated/t.bin"] == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status,tries", [(404, 1), (500, 3)])
def test_http_errors(server, tmp_path, status, tries):
    url = f"{server}/{status}/missing.bin"
    with pytest.raises(DownloadError, match=rf"HTTP {status} .*{status}/missing\.bin"):
        _fetch(url, tmp_path, retries=3)
    assert Handler.hits[f"/{status}/missing.bin"] == tries  # 4xx is not retried, 5xx is
    assert list(tmp_path.iterdir()) == []


def test_retry_then_success(server, tmp_path):
    path = _fetch(f"{server}/flaky/f.bin", tmp_path, retries=3)
    assert path.read_bytes() == BODY and Handler.hits["/flaky/f.bin"] == 2


def test_offline_mode(server, tmp_path):
    url = f"{server}/ok/off.bin"
    with pytest.raises(DownloadError, match=r"offline mode: .*/ok/off\.bin is not in the cache"):
        _fetch(url, tmp_path, offline=True)
    assert "/ok/off.bin" not in Handler.hits
    _fetch(url, tmp_path)
    assert _fetch(url, tmp_path, offline=True).read_bytes() == BODY


def test_unreachable_host_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match=r"failed to download http://127\.0\.0\.1:9/x\.bin after 2 attempts"):
        fetch("http://127.0.0.1:9/x.bin", tmp_path, retries=2, backoff=0.01, timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AMED_CACHE", str(tmp_path / "c"))
    assert download.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AMED_CACHE")
    assert download.default_cache_dir().parts[-2:] == (".cache", "amed")


def test_offline_switch_and_the_old_import_path(monkeypatch):
    import amed.models.download as old

    assert (old.fetch, old.DownloadError, old.default_cache_dir) == (fetch, DownloadError, download.default_cache_dir)
    for value, offline in (("1", True), ("yes", True), ("0", False), ("false", False), ("", False)):
        monkeypatch.setenv("AMED_OFFLINE", value)
        assert download.is_offline() is offline and download.is_offline(not offline) is (not offline)
    monkeypatch.delenv("AMED_OFFLINE")
    assert download.is_offline() is False


# --- registry: names resolve through fetch; listings; offline -------------------------------------

def test_registry_specs_and_listing(tmp_path, monkeypatch):
    from amed.models import registry

    assert {"cifar10", "ffhq", "afhqv2", "imagenet64", "lsun_bedroom", "sd-v1-4", "sd-v1-5"} <= set(registry.MODELS)
    assert registry.MODELS["cifar10"].url.endswith("/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl")
    assert registry.MODELS["imagenet64"].format == "edm-pickle"
    assert registry.MODELS["lsun_bedroom"].url.endswith("consistency/edm_bedroom256_ema.pt")
    assert registry.MODELS["sd-v1-4"].repo == "CompVis/stable-diffusion-v1-4"
    assert all(spec.license for spec in registry.MODELS.values())
    (tmp_path / "edm-ffhq-64x64-uncond-vp.pkl").write_bytes(b"x")
    rows = {row.name: row for row in registry.list_models(tmp_path)}
    assert rows["ffhq"].cached and not rows["cifar10"].cached
    assert rows["cifar10"].size and rows["cifar10"].license == registry.EDM_LICENSE


def test_load_model_by_name_via_fetch(server, tmp_path, monkeypatch):
    from amed.models import registry

    calls = []

    def loader(path, **kw):
        calls.append((path, kw))
        return "adapter"

    spec = registry.ModelSpec("tiny", f"{server}/ok/tiny.pkl", "edm-pickle", "TEST-LICENCE-2", "16 KB", None, loader)
    monkeypatch.setitem(registry.MODELS, "tiny", spec)
    with pytest.raises(DownloadError, match="offline mode"):
        registry.load_model("tiny", cache_dir=tmp_path, offline=True)
    assert registry.load_model("tiny", cache_dir=tmp_path, offline=False) == "adapter"
    path, kw = calls[-1]
    assert path == tmp_path / "tiny.pkl" and kw["sha256"] == SHA and kw["license"] == "TEST-LICENCE-2"
    assert registry.load_model("tiny", cache_dir=tmp_path, offline=True) == "adapter"  # now cached
    with pytest.raises(ValueError, match="unknown model 'nope'.*cifar10"):
        registry.load_model("nope", cache_dir=tmp_path)
