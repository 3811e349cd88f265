"""Downloads against a local HTTP server on 127.0.0.1: good, truncated, corrupted, interrupted then
resumed with Range, mirror, non-HTTPS refused, corrupted cache re-fetched, safe pack import."""

import hashlib
import http.server
import json
import threading
import zipfile

import pytest

from bundle_factory import make_bundle, zip_bundle
from MedAILib.models import download, load_catalogue
from MedAILib.models.cache import bundle_dir
from MedAILib.core.errors import DownloadError, ModelError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}          # path -> bytes
    drop_after = {}     # path -> drop the connection after this many bytes (first request only)
    log_ranges = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        self.log_ranges.append((self.path, rng))
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        cut = self.drop_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # interrupted mid-transfer
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.files, _Handler.drop_after, _Handler.log_ranges = {}, {}, []
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDAI_MIRROR", raising=False)
    return tmp_path / "home"


def test_good_download(server, tmp_path):
    base, h = server
    h.files["/m.bin"] = PAYLOAD
    out = download.download_file(f"{base}/m.bin", tmp_path / "m.bin", SHA, len(PAYLOAD), show_bar=False)
    assert out.read_bytes() == PAYLOAD and not (tmp_path / "m.bin.part").exists()


def test_truncated_file_refused(server, tmp_path):
    base, h = server
    h.files["/m.bin"] = PAYLOAD[:1000]
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download.download_file(f"{base}/m.bin", tmp_path / "m.bin", SHA, show_bar=False)
    assert not (tmp_path / "m.bin").exists() and not (tmp_path / "m.bin.part").exists()


def test_corrupted_file_refused(server, tmp_path):
    base, h = server
    bad = bytearray(PAYLOAD)
    bad[5000] ^= 0xFF
    h.files["/m.bin"] = bytes(bad)
    with pytest.raises(DownloadError, match="checksum"):
        download.download_file(f"{base}/m.bin", tmp_path / "m.bin", SHA, len(PAYLOAD), show_bar=False)
    assert not (tmp_path / "m.bin").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    base, h = server
    h.files["/m.bin"] = PAYLOAD
    h.drop_after["/m.bin"] = 300_000
    out = download.download_file(f"{base}/m.bin", tmp_path / "m.bin", SHA, len(PAYLOAD), show_bar=False, timeout=5)
    assert out.read_bytes() == PAYLOAD
    ranges = [r for p, r in h.log_ranges if p == "/m.bin"]
    assert ranges[0] is None and any(r and r.startswith("bytes=") and r != "bytes=0-" for r in ranges[1:])


def test_partial_file_from_earlier_run_is_resumed(server, tmp_path):
    base, h = server
    h.files["/m.bin"] = PAYLOAD
    (tmp_path / "m.bin.part").write_bytes(PAYLOAD[:123_456])
    download.download_file(f"{base}/m.bin", tmp_path / "m.bin", SHA, len(PAYLOAD), show_bar=False)
    assert (tmp_path / "m.bin").read_bytes() == PAYLOAD
    assert h.log_ranges[-1][1] == "bytes=123456-"


def test_non_https_refused_but_loopback_and_explicit_mirror_allowed(server, tmp_path, monkeypatch):
    with pytest.raises(DownloadError, match="refusing"):
        download.download_file("http://example.org/m.bin", tmp_path / "x", SHA, show_bar=False)
    with pytest.raises(DownloadError, match="refusing"):
        download.download_file("ftp://example.org/m.bin", tmp_path / "x", SHA, show_bar=False)
    download.check_url("http://127.0.0.1:8000/x")
    download.check_url("http://intranet.hospital/x", explicit_mirror=True)
    base, h = server
    h.files["/mirror/m.bin"] = PAYLOAD
    monkeypatch.setenv("MEDAI_MIRROR", f"{base}/mirror")
    out = download.download_file("https://models.example.org/releases/m.bin", tmp_path / "m.bin", SHA, show_bar=False)
    assert out.read_bytes() == PAYLOAD and h.log_ranges[-1][0] == "/mirror/m.bin"


def _catalogue_with(home, base, zip_path, name="zoo_model"):
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    shipped = load_catalogue().get("hippocampus_unet").raw
    entry = dict(shipped, id=name, source={"url": f"{base}/{zip_path.name}", "format": "zip"}, sha256=digest,
                 size_bytes=zip_path.stat().st_size, memory_mb=100)
    home.mkdir(parents=True, exist_ok=True)
    (home / "catalogue.json").write_text(json.dumps({"version": 1, "models": [entry]}))
    return load_catalogue().get(name)


def test_catalogue_model_download_offline_and_corrupt_cache_refetch(server, tmp_path, home):
    base, h = server
    z = zip_bundle(make_bundle(tmp_path / "b"), tmp_path / "zoo_model.zip", top="zoo_model")
    h.files["/zoo_model.zip"] = z.read_bytes()
    entry = _catalogue_with(home, base, z)
    folder = download.ensure_model(entry)
    assert (folder / "configs" / "inference.json").exists() and download.is_cached(entry)
    from MedAILib.models import resolve_model

    assert resolve_model("zoo_model").network is not None  # verified download => trusted
    # offline: no server needed once cached
    h.files.clear()
    assert download.ensure_model(entry, allow_download=False) == folder
    # corrupt the cached weights and the archive: detected by checksum, fetched again
    (folder / "models" / "model.pt").write_bytes(b"garbage")
    archive = download.archive_path(entry)
    archive.write_bytes(b"corrupt archive")
    h.files["/zoo_model.zip"] = z.read_bytes()
    n_before = len(h.log_ranges)
    folder2 = download.ensure_model(entry)
    assert len(h.log_ranges) > n_before
    assert download.is_cached(entry) and (folder2 / "models" / "model.pt").read_bytes() != b"garbage"
    # offline and not cached: a clear message
    import shutil

    shutil.rmtree(bundle_dir("zoo_model"))
    archive.unlink()
    with pytest.raises(DownloadError, match="models import"):
        download.ensure_model(entry, allow_download=False)


def test_import_pack_and_path_escapes_refused(tmp_path, home):
    z = zip_bundle(make_bundle(tmp_path / "b"), tmp_path / "pack.zip")
    model_id, folder, trusted = download.import_pack(z, load_catalogue())
    assert (folder / "configs").is_dir() and not trusted and model_id == "pack"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("configs/inference.json", "{}")
        zf.writestr("../../escaped.txt", "x")
    with pytest.raises(ModelError, match="outside the cache"):
        download.import_pack(evil, load_catalogue())
    assert not (home.parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("configs/evil")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ModelError, match="symbolic link"):
        download.import_pack(link, load_catalogue())
    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/tmp/abs.txt", "x")
    with pytest.raises(ModelError):
        download.import_pack(absolute, load_catalogue())
