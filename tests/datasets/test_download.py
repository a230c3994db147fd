"""download()/fetch() against a real HTTP server on 127.0.0.1 (a thread in the test)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from metalearn.datasets import (
    SOURCES,
    ChecksumError,
    DownloadError,
    Omniglot,
    Source,
    download,
    fetch,
)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not HTML


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}  # noqa: RUF012 - set per server below
    html: set[str] = set()  # noqa: RUF012
    cut_once: set[str] = set()  # noqa: RUF012
    log: list[tuple[str, str | None]] = []  # noqa: RUF012

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.log.append((self.path, self.headers.get("Range")))
        if self.path in self.html:
            body = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path not in self.files:
            self.send_error(404, "Not Found")
            return
        data = self.files[self.path]
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.path in self.cut_once:  # drop the connection half-way, once
            self.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.files, Handler.html, Handler.cut_once, Handler.log = {}, set(), set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_moves_into_place(server, tmp_path):
    handler, url = server
    handler.files["/a.bin"] = PAYLOAD
    src = Source(f"{url}/a.bin", "a.bin", sha256=sha(PAYLOAD))
    assert download("x", tmp_path, sources=[src], progress=False) == tmp_path
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["a.bin"]
    # Already present and verified: no second request.
    fetch(src, tmp_path, progress=False)
    assert len(handler.log) == 1


def test_bad_checksum_leaves_nothing(server, tmp_path):
    handler, url = server
    handler.files["/a.bin"] = PAYLOAD
    src = Source(f"{url}/a.bin", "a.bin", sha256=sha(b"something else"))
    with pytest.raises(ChecksumError, match=r"a\.bin.*sha256") as err:
        download("x", tmp_path, sources=[src], progress=False)
    assert isinstance(err.value, ValueError)
    assert leftovers(tmp_path) == []


def test_md5_is_checked_too(server, tmp_path):
    handler, url = server
    handler.files["/a.bin"] = PAYLOAD
    with pytest.raises(ChecksumError, match="md5"):
        fetch(Source(f"{url}/a.bin", "a.bin", md5="0" * 32), tmp_path, progress=False)
    good = hashlib.md5(PAYLOAD).hexdigest()
    assert fetch(Source(f"{url}/a.bin", "a.bin", md5=good), tmp_path, progress=False).is_file()


def test_html_error_page_is_refused(server, tmp_path):
    handler, url = server
    handler.html.add("/a.bin")
    with pytest.raises(DownloadError, match="HTML"):
        fetch(Source(f"{url}/a.bin", "a.bin", sha256=sha(PAYLOAD)), tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_http_error_and_mirror_fallback(server, tmp_path):
    handler, url = server
    handler.files["/mirror/a.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match="404"):
        fetch(Source(f"{url}/missing.bin", "a.bin"), tmp_path, progress=False)
    src = Source(
        f"{url}/missing.bin", "a.bin", sha256=sha(PAYLOAD), mirrors=(f"{url}/mirror/a.bin",)
    )
    assert fetch(src, tmp_path, progress=False).read_bytes() == PAYLOAD


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    handler, url = server
    handler.files["/a.bin"] = PAYLOAD
    handler.cut_once.add("/a.bin")
    src = Source(f"{url}/a.bin", "a.bin", sha256=sha(PAYLOAD))
    with pytest.raises(DownloadError, match="resume"):
        fetch(src, tmp_path, progress=False)
    part = tmp_path / "a.bin.part"
    assert not (tmp_path / "a.bin").exists()
    assert 0 < part.stat().st_size < len(PAYLOAD)
    offset = part.stat().st_size
    fetch(src, tmp_path, progress=False)
    assert handler.log[-1] == ("/a.bin", f"bytes={offset}-")
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["a.bin"]


def test_corrupt_partial_file_fails_the_checksum_and_is_deleted(server, tmp_path):
    handler, url = server
    handler.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(b"\xff" * 1000)  # not a prefix of the file
    src = Source(f"{url}/a.bin", "a.bin", sha256=sha(PAYLOAD))
    with pytest.raises(ChecksumError):
        fetch(src, tmp_path, progress=False)
    assert leftovers(tmp_path) == []
    fetch(src, tmp_path, progress=False)  # a clean retry succeeds
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_unverified_source_warns_with_the_computed_sha256(server, tmp_path):
    handler, url = server
    handler.files["/a.bin"] = PAYLOAD
    with pytest.warns(UserWarning, match=sha(PAYLOAD)):
        fetch(Source(f"{url}/a.bin", "a.bin"), tmp_path, progress=False)


def test_downloaded_omniglot_zips_load(server, tmp_path, omniglot_zip_root):
    handler, url = server
    sources = []
    for part in ("background", "evaluation"):
        data = (omniglot_zip_root / f"images_{part}.zip").read_bytes()
        handler.files[f"/omniglot/images_{part}.zip"] = data
        sources.append(Source(f"{url}/omniglot/images_{part}.zip", f"images_{part}.zip", sha(data)))
    root = download("omniglot", tmp_path / "omniglot", sources=sources, progress=False)
    ds = Omniglot(root, "test", check_classes=False)
    assert ds.num_classes == 2 * 4


def test_source_table():
    assert set(SOURCES) == {"omniglot", "miniimagenet"}
    assert [s.filename for s in SOURCES["omniglot"]] == [
        "images_background.zip",
        "images_evaluation.zip",
    ]
    assert all(s.verified and len(s.md5) == 32 for s in SOURCES["omniglot"])
    assert [s.filename for s in SOURCES["miniimagenet"]] == [
        f"mini-imagenet-cache-{s}.pkl" for s in ("train", "validation", "test")
    ]
    for sources in SOURCES.values():
        for s in sources:
            assert s.url.startswith("https://") and all(m.startswith("https://") for m in s.mirrors)
    with pytest.raises(ValueError, match="name"):
        download("cifar", "unused")
