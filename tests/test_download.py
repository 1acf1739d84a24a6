"""rgpt.data.download end to end, against a real HTTP server on the loopback interface.

The server (http.server in a thread, on a free port) serves generated files and archives, honours
Range requests, and can be told to drop a transfer after N bytes, ignore Range, answer 503 a few
times or serve corrupted bytes: the failures a multi-day download of the real corpus meets.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rgpt.config import load_params
from rgpt.data import layout
from rgpt.data.download import (
    ArchiveError,
    DownloadError,
    auth_headers,
    download_file,
    extract,
    fetch_all,
    fetch_source,
)
from rgpt.data.sources import POPE_COMMIT, SOURCES, RemoteFile, Source

DATA = random.Random(0).randbytes(100_000)
SHA256 = hashlib.sha256(DATA).hexdigest()


@dataclass
class Behaviour:
    fail_first: int = 0  # answer 503 to this many requests
    cut_after: int | None = None  # send only this many body bytes, then drop the connection...
    cuts: int = 1  # ...on this many requests
    ignore_range: bool = False  # always answer 200 with the whole file
    corrupt: bool = False  # flip the first byte


@dataclass
class Request:
    path: str
    range: str | None
    authorization: str | None


class LoopbackServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.requests: list[Request] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection
            def do_GET(self) -> None:
                outer._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def add(self, path: str, data: bytes, **behaviour: object) -> str:
        self.files[path] = data
        self.behaviour[path] = Behaviour(**behaviour)
        return self.url(path)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        asked = h.headers.get("Range")
        self.requests.append(Request(h.path, asked, h.headers.get("Authorization")))
        if h.path not in self.files:
            h.send_error(404)
            return
        b = self.behaviour[h.path]
        if b.fail_first:
            b.fail_first -= 1
            h.send_error(503)
            return
        data = self.files[h.path]
        if b.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if asked and not b.ignore_range:
            start = int(asked.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if b.cut_after is not None and b.cuts:
            b.cuts -= 1
            body = body[: b.cut_after]  # the connection closes short of Content-Length
        h.wfile.write(body)


@pytest.fixture
def server():
    s = LoopbackServer()
    yield s
    s.close()


def fetch(urls, dest: Path, **kwargs) -> Path:
    return download_file(urls, dest, progress=False, backoff_s=0, **kwargs)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_bytes(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


# ---- download_file ------------------------------------------------------------------------


def test_download_verifies_checksum_and_size_then_renames(server, tmp_path):
    url = server.add("/a.bin", DATA)
    dest = tmp_path / "sub" / "a.bin"
    assert fetch(url, dest, sha256=SHA256, size=len(DATA)) == dest
    assert dest.read_bytes() == DATA
    assert not (tmp_path / "sub" / "a.bin.part").exists()
    assert server.requests == [Request("/a.bin", None, None)]


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    url = server.add("/a.bin", DATA, cut_after=30_000)
    dest = fetch(url, tmp_path / "a.bin", sha256=SHA256, retries=1)
    assert [r.range for r in server.requests] == [None, "bytes=30000-"]
    assert dest.read_bytes() == DATA


def test_interrupted_run_keeps_the_part_file_and_the_next_run_resumes(server, tmp_path):
    url = server.add("/a.bin", DATA, cut_after=40_000)
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match="gave up after 1 attempts"):
        fetch(url, dest, sha256=SHA256, retries=0)
    assert not dest.exists()
    assert (tmp_path / "a.bin.part").stat().st_size == 40_000

    fetch(url, dest, sha256=SHA256, retries=0)
    assert [r.range for r in server.requests] == [None, "bytes=40000-"]
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.add("/a.bin", DATA, cut_after=30_000, ignore_range=True)
    dest = fetch(url, tmp_path / "a.bin", sha256=SHA256, retries=1)
    assert [r.range for r in server.requests] == [None, "bytes=30000-"]
    assert dest.read_bytes() == DATA  # rewritten, not the first 30,000 bytes twice


def test_complete_part_file_is_finished_on_416(server, tmp_path):
    url = server.add("/a.bin", DATA)
    (tmp_path / "a.bin.part").write_bytes(DATA)  # a run that stopped between the last byte and the rename
    dest = fetch(url, tmp_path / "a.bin", sha256=SHA256)
    assert [r.range for r in server.requests] == [f"bytes={len(DATA)}-"]
    assert dest.read_bytes() == DATA


def test_checksum_mismatch_names_url_file_and_digests_and_removes_the_download(server, tmp_path):
    url = server.add("/a.bin", DATA, corrupt=True)
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, sha256=SHA256)
    corrupted = hashlib.sha256(bytes([DATA[0] ^ 0xFF]) + DATA[1:]).hexdigest()
    message = str(err.value)
    assert url in message and str(dest) in message
    assert f"expected {SHA256}, got {corrupted}" in message
    assert not dest.exists() and not (tmp_path / "a.bin.part").exists()

    server.behaviour["/a.bin"].corrupt = False  # the next run fetches the whole file again
    fetch(url, dest, sha256=SHA256)
    assert server.requests[-1].range is None
    assert dest.read_bytes() == DATA


def test_size_mismatch_is_reported(server, tmp_path):
    url = server.add("/a.bin", DATA)
    with pytest.raises(DownloadError, match=f"size mismatch: expected 5 bytes, got {len(DATA)}"):
        fetch(url, tmp_path / "a.bin", size=5)
    assert not (tmp_path / "a.bin").exists()


def test_md5_is_checked_too(server, tmp_path):
    url = server.add("/a.bin", DATA)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        fetch(url, tmp_path / "a.bin", md5="0" * 32)
    fetch(url, tmp_path / "a.bin", md5=hashlib.md5(DATA).hexdigest())
    assert (tmp_path / "a.bin").read_bytes() == DATA


def test_server_errors_are_retried(server, tmp_path):
    url = server.add("/a.bin", DATA, fail_first=2)
    fetch(url, tmp_path / "a.bin", sha256=SHA256, retries=2)
    assert server.paths() == ["/a.bin"] * 3
    assert (tmp_path / "a.bin").read_bytes() == DATA


def test_gives_up_after_the_retries_and_names_the_status(server, tmp_path):
    url = server.add("/a.bin", DATA, fail_first=10)
    with pytest.raises(DownloadError, match=r"HTTP 503 \(gave up after 3 attempts\)"):
        fetch(url, tmp_path / "a.bin", retries=2)
    assert len(server.requests) == 3


def test_present_verified_file_makes_no_request(server, tmp_path):
    url = server.add("/a.bin", DATA)
    dest = tmp_path / "a.bin"
    dest.write_bytes(DATA)
    fetch(url, dest, sha256=SHA256)
    assert server.requests == []


def test_present_corrupted_file_is_fetched_again(server, tmp_path):
    url = server.add("/a.bin", DATA)
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"truncated")
    fetch(url, dest, sha256=SHA256)
    assert server.requests == [Request("/a.bin", None, None)]
    assert dest.read_bytes() == DATA


def test_mirror_is_tried_when_the_first_url_is_missing(server, tmp_path):
    good = server.add("/mirror/a.bin", DATA)
    dest = fetch([server.url("/official/a.bin"), good], tmp_path / "a.bin", sha256=SHA256)
    assert server.paths() == ["/official/a.bin", "/mirror/a.bin"]
    assert dest.read_bytes() == DATA


def test_every_url_failing_lists_each_failure(server, tmp_path):
    urls = [server.url("/one.bin"), server.url("/two.bin")]
    with pytest.raises(DownloadError) as err:
        fetch(urls, tmp_path / "a.bin")
    assert f"{urls[0]}: HTTP 404" in str(err.value) and f"{urls[1]}: HTTP 404" in str(err.value)


def test_hf_token_goes_to_huggingface_only_and_is_never_logged(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert auth_headers("https://huggingface.co/datasets/a/b/resolve/main/c.json") == {
        "Authorization": "Bearer hf_secret"
    }
    assert auth_headers("https://huggingface.co.example.com/c.json") == {}
    assert auth_headers("http://images.cocodataset.org/zips/val2017.zip") == {}

    url = server.add("/a.bin", DATA, fail_first=1)
    with caplog.at_level("DEBUG"):
        fetch(url, tmp_path / "a.bin", retries=1)
    assert [r.authorization for r in server.requests] == [None, None]
    assert "retry 1/1" in caplog.text and "hf_secret" not in caplog.text


# ---- extract ------------------------------------------------------------------------------

ENTRIES = {"annotations/a.json": b'{"a": 1}', "b.txt": b"bee"}


@pytest.mark.parametrize("name, payload", [("x.zip", zip_bytes(ENTRIES)), ("x.tar.gz", tar_gz_bytes(ENTRIES))])
def test_extract_unpacks_once(tmp_path, name, payload):
    archive = tmp_path / name
    archive.write_bytes(payload)
    into = tmp_path / "out"
    assert extract(archive, into) == into
    unpacked = {str(p.relative_to(into)): p.read_bytes() for p in into.rglob("*") if p.is_file()}
    assert unpacked == {**ENTRIES, f".{name}.extracted": f"{name}\n".encode()}  # entries + the marker

    (into / "b.txt").write_bytes(b"edited")
    extract(archive, into)  # the marker makes the second call a no-op
    assert (into / "b.txt").read_bytes() == b"edited"


def test_extract_gunzips_a_single_file(tmp_path):
    archive = tmp_path / "questions.json.gz"
    archive.write_bytes(gzip.compress(b'{"q": 1}\n'))
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "questions.json").read_bytes() == b'{"q": 1}\n'


@pytest.mark.parametrize(
    "name, payload, entry",
    [
        ("evil.zip", zip_bytes({"ok.txt": b"ok", "../evil.txt": b"x"}), "../evil.txt"),
        ("evil.tar.gz", tar_gz_bytes({"ok.txt": b"ok", "../evil.txt": b"x"}), "../evil.txt"),
        ("link.tar.gz", tar_gz_bytes({"ok.txt": b"ok"}, symlinks={"passwd": "/etc/passwd"}), "passwd"),
    ],
)
def test_extract_refuses_entries_outside_the_target(tmp_path, name, payload, entry):
    archive = tmp_path / name
    archive.write_bytes(payload)
    into = tmp_path / "out"
    with pytest.raises(ArchiveError, match=f"entry '{entry}' would be written outside"):
        extract(archive, into)
    assert not (tmp_path / "evil.txt").exists()
    assert list(into.iterdir()) == []  # checked before anything is written, and no marker


def test_extract_rejects_an_unknown_archive_type(tmp_path):
    (tmp_path / "x.rar").write_bytes(b"Rar!")
    with pytest.raises(ArchiveError, match="unknown archive type"):
        extract(tmp_path / "x.rar", tmp_path / "out")


# ---- fetch_source / fetch_all -------------------------------------------------------------


def test_fetch_source_lands_files_at_the_layout_paths(server, tmp_path):
    questions = b'{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "?", "label": "yes"}\n'
    lvis = b'{"images": [], "annotations": [], "categories": []}'
    lvis_zip = zip_bytes({"lvis_v1_val.json": lvis})
    images = tar_gz_bytes({"val2017/000000000139.jpg": b"\xff\xd8jpeg"})
    source = Source(
        name="tiny",
        files=(
            RemoteFile(
                urls=(server.add("/pope.json", questions),),
                dest=layout.POPE_QUESTIONS["random"],
                sha256=hashlib.sha256(questions).hexdigest(),
                size=len(questions),
            ),
            RemoteFile(
                urls=(server.add("/lvis_v1_val.json.zip", lvis_zip),),
                dest="lvis/lvis_v1_val.json.zip",
                sha256=hashlib.sha256(lvis_zip).hexdigest(),
                extract_to="lvis",
                unpacks_to=(layout.LVIS_ANNOTATIONS["val"],),
            ),
            RemoteFile(
                urls=(server.add("/val2017.tar.gz", images),),
                dest="coco/val2017.tar.gz",
                extract_to=layout.COCO_ROOT,
                unpacks_to=(layout.COCO_IMAGE_DIRS["val"],),
                image=True,
            ),
        ),
    )
    root = tmp_path / "data"

    paths = fetch_source(source, root, images=False, progress=False)
    assert paths == [root / layout.POPE_QUESTIONS["random"], root / "lvis"]
    assert (root / "pope/coco/coco_pope_random.json").read_bytes() == questions
    assert (root / "lvis/lvis_v1_val.json").read_bytes() == lvis
    assert not (root / "lvis/lvis_v1_val.json.zip").exists()  # the archive is removed once unpacked
    assert server.paths() == ["/pope.json", "/lvis_v1_val.json.zip"]  # images skipped

    fetch_source(source, root, images=True, progress=False)
    assert server.paths()[2:] == ["/val2017.tar.gz"]  # only what was missing
    assert (root / "coco/val2017/000000000139.jpg").read_bytes() == b"\xff\xd8jpeg"

    fetch_source(source, root, images=True, progress=False)
    assert len(server.requests) == 3  # a complete corpus costs no request


def test_fetch_source_reports_an_archive_that_unpacks_elsewhere(server, tmp_path):
    archive = zip_bytes({"LVIS/lvis_v1_val.json": b"{}"})
    source = Source(
        name="tiny",
        files=(
            RemoteFile(
                urls=(server.add("/lvis.zip", archive),),
                dest="lvis/lvis_v1_val.json.zip",
                extract_to="lvis",
                unpacks_to=(layout.LVIS_ANNOTATIONS["val"],),
            ),
        ),
    )
    with pytest.raises(ArchiveError) as err:
        fetch_source(source, tmp_path, progress=False)
    message = str(err.value)
    assert "without ['lvis/lvis_v1_val.json'] (found ['LVIS'])" in message
    assert "'tiny' in rgpt/data/sources.py" in message
    assert (tmp_path / "lvis/lvis_v1_val.json.zip").exists()  # kept for the fixed registry

    with pytest.raises(ArchiveError, match="without"):  # a rerun does not pass over the wrong layout
        fetch_source(source, tmp_path, progress=False)
    assert len(server.requests) == 1


def test_unknown_source_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError) as err:
        fetch_all(["coco2017", "imagenet"], tmp_path)
    assert "unknown download source 'imagenet'" in str(err.value)
    assert all(repr(name) in str(err.value) for name in SOURCES)
    assert list(tmp_path.iterdir()) == []  # checked before anything was fetched


# ---- the registry -------------------------------------------------------------------------


def test_registry_matches_params_and_produces_every_layout_path():
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    assert sorted(SOURCES) == sorted(params.download.sources)

    def produced(files: list[RemoteFile]) -> set[str]:
        return {f.dest for f in files if f.extract_to is None} | {p for f in files for p in f.unpacks_to}

    files = [f for s in SOURCES.values() for f in s.files]
    annotations = {
        *layout.V3DET_ANNOTATIONS.values(),
        layout.V3DET_CATEGORY_NAMES,
        layout.VG_IMAGE_DATA,
        layout.VG_REGION_DESCRIPTIONS,
        layout.VG_RELATIONSHIPS,
        layout.VG_OBJECTS,
        layout.VG_SPLITS,
        *layout.COCO_ANNOTATIONS.values(),
        *layout.LVIS_ANNOTATIONS.values(),
        layout.REFCOCOG_INSTANCES,
        layout.REFCOCOG_REFS,
        layout.LLAVA_JSON,
        *layout.POPE_QUESTIONS.values(),
    }
    image_dirs = {
        f"{layout.V3DET_ROOT}/images",
        f"{layout.VG_ROOT}/VG_100K",
        f"{layout.VG_ROOT}/VG_100K_2",
        *layout.COCO_IMAGE_DIRS.values(),
        *layout.COCO2014_IMAGE_DIRS.values(),
    }
    # `download.images: false` still yields every annotation file; the image folders come only
    # from the image archives.
    assert annotations - produced([f for f in files if not f.image]) == set()
    assert produced([f for f in files if f.image]) == image_dirs
    assert {f.extract_to for f in files if f.image} >= {layout.LLAVA_IMAGES}


def test_registry_pins_pope_and_keeps_checksums_well_formed():
    pope = SOURCES["pope"]
    assert pope.revision == POPE_COMMIT == "109985c74a00a88ba5341f9b0c1d4900f2a1f789"
    assert all(f"/POPE/{POPE_COMMIT}/output/coco/" in f.urls[0] for f in pope.files)
    for f in (f for s in SOURCES.values() for f in s.files):
        assert f.sha256 is None or (len(f.sha256) == 64 and f.sha256 == f.sha256.lower()), f.dest
        assert f.urls and all(u.startswith(("http://", "https://")) for u in f.urls), f.dest
