"""Fetch the real datasets: resumable, verified HTTP downloads and safe, idempotent extraction.

`fetch_all(["coco2017", "pope"], data_root)` downloads every file that rgpt.data.sources lists
for those sources, checks it against its published checksum and size, and unpacks archives so
that the tree under `data_root` is the rgpt.data.layout one. Running it again costs no network
call: verified files are skipped and unpacked archives leave a marker.

A download goes to `<dest>.part` and is renamed to `dest` only once verified, so `dest` never
holds a partial or corrupted file. An interrupted transfer resumes from the end of the `.part`
with an HTTP Range request, on the next attempt or the next run.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import re
import shutil
import tarfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from tqdm import tqdm

from rgpt.data.sources import RemoteFile, Source, get_source

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
RETRY_STATUSES = {429, 500, 502, 503, 504}  # worth another attempt at the same URL


class DownloadError(RuntimeError):
    """A file could not be fetched from any of its URLs, or did not match its checksum."""


class ArchiveError(RuntimeError):
    """An archive is of an unknown type, is unsafe, or did not unpack to the promised layout."""


class _Retry(Exception):
    """A failure another attempt at the same URL may fix (server error, dropped connection)."""


def auth_headers(url: str) -> dict[str, str]:
    """A bearer token from $HF_TOKEN for huggingface.co URLs only (gated or rate-limited files).

    httpx drops the header again when the hub redirects to its CDN, a different origin, so the
    token only ever goes to huggingface.co. It is never logged.
    """
    token = os.environ.get("HF_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token and _on_hugging_face(url) else {}


def _on_hugging_face(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "huggingface.co" or host.endswith(".huggingface.co")


def download_file(
    urls: str | Sequence[str],
    dest: str | Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    progress: bool = True,
    client: httpx.Client | None = None,
) -> Path:
    """Download `urls` (the first that works; the rest are mirrors) to `dest` and verify it.

    Each URL gets `retries` further attempts after connection errors, timeouts, 429 and 5xx,
    waiting `backoff_s` * 2**attempt in between; each attempt resumes the `.part` file. A
    `dest` that is already present and matches the checksum and size is returned without any
    network call (with nothing to check it against, its presence is enough: `dest` only ever
    appears after a complete download). A `client` passed in must follow redirects (the
    Hugging Face hub answers with one).
    """
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    dest = Path(dest)
    if dest.exists():
        problem = _mismatch(dest, sha256=sha256, md5=md5, size=size)
        if problem is None:
            log.info("%s: present and verified, skipped", dest)
            return dest
        log.warning("%s: %s; downloading it again", dest, problem)
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = []
    with _client(client) as http:
        for url in urls:
            try:
                _fetch(http, url, part, retries=retries, timeout_s=timeout_s, backoff_s=backoff_s, progress=progress)
                break
            except DownloadError as e:
                failures.append(f"{url}: {e}")
        else:
            resume = f"\nRun again to resume from {part}." if part.exists() else ""
            raise DownloadError(f"could not download {dest}:\n  " + "\n  ".join(failures) + resume)

    problem = _mismatch(part, sha256=sha256, md5=md5, size=size)
    if problem is not None:
        part.unlink()
        raise DownloadError(
            f"{url} -> {dest}: {problem}. The corrupted download was removed; run again to fetch it "
            "afresh. If it fails the same way, the file changed upstream: check its entry in "
            "rgpt/data/sources.py."
        )
    part.replace(dest)  # atomic: dest appears only complete and verified
    return dest


def _client(client: httpx.Client | None) -> contextlib.AbstractContextManager[httpx.Client]:
    """The caller's client (left open), or a fresh one closed on exit."""
    return contextlib.nullcontext(client) if client is not None else httpx.Client(follow_redirects=True)


def _fetch(
    http: httpx.Client, url: str, part: Path, *, retries: int, timeout_s: float, backoff_s: float, progress: bool
) -> None:
    """Complete `part` from `url`, retrying transient failures with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            _transfer(http, url, part, timeout_s=timeout_s, progress=progress)
            return
        except (httpx.TransportError, _Retry) as e:
            reason = f"{type(e).__name__}: {e}" if isinstance(e, httpx.TransportError) else str(e)
            if attempt == retries:
                raise DownloadError(f"{reason} (gave up after {retries + 1} attempts)") from e
            delay = backoff_s * 2**attempt
            log.warning("%s: %s; retry %d/%d in %.1f s", url, reason, attempt + 1, retries, delay)
            time.sleep(delay)


def _transfer(http: httpx.Client, url: str, part: Path, *, timeout_s: float, progress: bool) -> None:
    """One GET that appends to `part` from where it ends (or rewrites it when the server restarts)."""
    have = part.stat().st_size if part.exists() else 0
    # identity: Range offsets count the bytes on the wire, so they must be the file's own bytes.
    headers = {"Accept-Encoding": "identity", **auth_headers(url)}
    if have:
        headers["Range"] = f"bytes={have}-"
    with http.stream("GET", url, headers=headers, timeout=timeout_s) as r:
        if r.status_code == 416:  # nothing left after `have`: complete already, or longer than the file
            if _content_range(r.headers.get("Content-Range"))[1] == have:
                return
            part.unlink()
            raise _Retry(f"HTTP 416 for a {have}-byte partial file; starting over")
        if r.status_code in RETRY_STATUSES:
            raise _Retry(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            gated = r.status_code in (401, 403) and _on_hugging_face(url)
            hint = " (set HF_TOKEN to a Hugging Face access token)" if gated else ""
            raise DownloadError(f"HTTP {r.status_code}{hint}")
        if r.status_code == 206 and _content_range(r.headers.get("Content-Range"))[0] != have:
            part.unlink()
            raise _Retry("the server resumed at the wrong offset; starting over")
        if r.status_code == 200 and have:
            log.info("%s: the server ignored the Range request; restarting from byte 0", url)
            have = 0
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            part.open("ab" if have else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            for chunk in r.iter_raw():  # as it arrives: a dropped connection loses nothing received
                f.write(chunk)
                bar.update(len(chunk))


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) of a Content-Range header: 'bytes 100-199/200' -> (100, 200), 'bytes */200' -> (None, 200)."""
    m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if m is None:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total.isdigit() else None)


def _mismatch(path: Path, *, sha256: str | None, md5: str | None, size: int | None) -> str | None:
    """What is wrong with `path` against the expected size and digests, or None if nothing."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size mismatch: expected {size} bytes, got {actual_size}"
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, algorithm).hexdigest()
        if actual != expected.lower():
            return f"{algorithm} mismatch: expected {expected}, got {actual}"
    return None


# ---- extraction ---------------------------------------------------------------------------


def extract(archive: str | Path, into: str | Path) -> Path:
    """Unpack a .zip, .tar, .tar.gz/.tgz or .gz file into `into`, once.

    Every entry is checked before anything is written: one that would land outside `into`
    (an absolute path, `..`, a link pointing out) raises ArchiveError. A marker file records a
    finished extraction, so a second call returns at once.
    """
    archive, into = Path(archive), Path(into)
    marker = _marker(archive, into)
    if marker.exists():
        return into
    into.mkdir(parents=True, exist_ok=True)
    name = archive.name
    if name.endswith(".zip"):
        _unzip(archive, into)
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        _untar(archive, into)
    elif name.endswith(".gz"):
        with gzip.open(archive, "rb") as src, (into / name.removesuffix(".gz")).open("wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)
    else:
        raise ArchiveError(f"{archive}: unknown archive type; expected .zip, .tar, .tar.gz, .tgz or .gz")
    marker.write_text(f"{name}\n")
    return into


def _marker(archive: Path, into: Path) -> Path:
    return into / f".{archive.name}.extracted"


def _unsafe(archive: Path, entry: str, into: Path) -> ArchiveError:
    return ArchiveError(
        f"{archive}: entry {entry!r} would be written outside {into}; refusing to extract. "
        "Delete the archive and download it again from its official source."
    )


def _unzip(archive: Path, into: Path) -> None:
    # zipfile would silently rewrite `..` and absolute names; an archive holding them is not the real one.
    root = into.resolve()
    with zipfile.ZipFile(archive) as zf:
        for entry in zf.namelist():
            if not (root / entry).resolve().is_relative_to(root):
                raise _unsafe(archive, entry, into)
        zf.extractall(into)


def _untar(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:  # tarfile's own "data" policy, applied to all entries up front
            try:
                tarfile.data_filter(member, str(into))
            except tarfile.FilterError as e:
                raise _unsafe(archive, member.name, into) from e
        tf.extractall(into, members=members, filter="data")


# ---- sources ------------------------------------------------------------------------------


def fetch_source(
    source: Source,
    data_root: str | Path,
    *,
    images: bool = True,
    retries: int = 5,
    timeout_s: float = 60.0,
    progress: bool = True,
    client: httpx.Client | None = None,
) -> list[Path]:
    """Download, verify and unpack every file of `source` under `data_root`.

    `images=False` skips the image archives (annotations only). Returns the paths the source
    now provides: downloaded files, and the folders archives were unpacked into.
    """
    data_root = Path(data_root)
    wanted = [f for f in source.files if images or not f.image]
    if len(wanted) < len(source.files):
        log.info("%s: skipping %d image archive(s) (images=False)", source.name, len(source.files) - len(wanted))
    opts = dict(retries=retries, timeout_s=timeout_s, progress=progress)
    with _client(client) as http:
        paths = [_fetch_file(source, spec, data_root, client=http, **opts) for spec in wanted]
    return list(dict.fromkeys(paths))  # several archives may unpack into one folder


def _fetch_file(source: Source, spec: RemoteFile, data_root: Path, **opts: Any) -> Path:
    path = data_root / spec.dest
    checks = dict(sha256=spec.sha256, md5=spec.md5, size=spec.size)
    if spec.extract_to is None:
        return download_file(spec.urls, path, **checks, **opts)
    into = data_root / spec.extract_to
    if _marker(path, into).exists():
        log.info("%s: already unpacked into %s, skipped", path.name, into)
    else:
        download_file(spec.urls, path, **checks, **opts)
        extract(path, into)
    _check_unpacked(source, spec, data_root, path)  # every run: a wrong layout fails until fixed
    # The unpacked tree is what the readers use; keeping the archive too would double the disk
    # and the DVC cache. The extraction marker keeps the next run from fetching it again.
    path.unlink(missing_ok=True)
    return into


def _check_unpacked(source: Source, spec: RemoteFile, data_root: Path, archive: Path) -> None:
    missing = [p for p in spec.unpacks_to if not (data_root / p).exists()]
    if missing:
        into = data_root / spec.extract_to
        found = sorted(p.name for p in into.iterdir() if p != archive and not p.name.startswith("."))
        raise ArchiveError(
            f"{archive} unpacked into {into} without {missing} (found {found}). "
            f"The archive's layout differs from the registry: fix `extract_to`/`unpacks_to` of "
            f"{source.name!r} in rgpt/data/sources.py and run again (the archive is kept until then)."
        )


def fetch_all(
    names: Iterable[str],
    data_root: str | Path,
    *,
    images: bool = True,
    retries: int = 5,
    timeout_s: float = 60.0,
    progress: bool = True,
    client: httpx.Client | None = None,
) -> dict[str, list[Path]]:
    """fetch_source for each named registry entry, sharing one HTTP client (connection reuse)."""
    sources = [get_source(name) for name in names]  # a typo fails before anything is downloaded
    with _client(client) as http:
        return {
            s.name: fetch_source(
                s, data_root, images=images, retries=retries, timeout_s=timeout_s, progress=progress, client=http
            )
            for s in sources
        }
