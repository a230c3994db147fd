"""Checksummed, resumable, atomic downloads of the few-shot datasets (stdlib ``urllib`` only)."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["SOURCES", "ChecksumError", "DownloadError", "Source", "download", "fetch"]

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed (HTTP error, an HTML page instead of the file, a dropped connection)."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded file does not match its published checksum; it was deleted."""


@dataclass(frozen=True)
class Source:
    """One file of a dataset: where to get it and how to verify it.

    Args:
        url: the primary URL.
        filename: the name it gets under ``root`` (what the loaders look for).
        sha256: the expected SHA-256 hex digest, when known.
        md5: the expected MD5 hex digest, when only that is published (checked if given).
        mirrors: further URLs tried in order when the primary fails.
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    mirrors: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        """Whether a published checksum guards this file."""
        return bool(self.sha256 or self.md5)


_OMNIGLOT = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
_OMNIGLOT_MIRROR = "https://github.com/brendenlake/omniglot/raw/master/python"
_L2L_ZENODO = "https://zenodo.org/record/7978538/files"

#: Public sources. Omniglot: the authors' repository; MD5s as published by torchvision (no
#: SHA-256 is published, and we do not invent one). MiniImagenet: learn2learn's pickled split
#: on Zenodo with their Dropbox copies as mirrors; no checksum is published, so these files are
#: NOT verified: download() warns and prints the SHA-256 it computed so you can pin it.
SOURCES: dict[str, tuple[Source, ...]] = {
    "omniglot": tuple(
        Source(
            f"{_OMNIGLOT}/images_{part}.zip",
            f"images_{part}.zip",
            md5=md5,
            mirrors=(f"{_OMNIGLOT_MIRROR}/images_{part}.zip",),
        )
        for part, md5 in (
            ("background", "68d2efa1b9178cc56df9314c21c6e718"),
            ("evaluation", "6b91aef0f799c5bb55b94e3f2daec811"),
        )
    ),
    "miniimagenet": tuple(
        Source(
            f"{_L2L_ZENODO}/mini-imagenet-cache-{split}.pkl",
            f"mini-imagenet-cache-{split}.pkl",
            mirrors=(f"https://www.dropbox.com/s/{box}/mini-imagenet-cache-{split}.pkl?dl=1",),
        )
        for split, box in (
            ("train", "9g8c6w345s2ek03"),
            ("validation", "ip1b7se3gij3r1b"),
            ("test", "ye9jeb5tyz0x01b"),
        )
    ),
}


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(source: Source, path: Path) -> tuple[str | None, str]:
    """``(error or None, sha256)`` of ``path`` against the source's checksums."""
    sha, md5 = _digests(path)
    if source.sha256 and sha != source.sha256.lower():
        return f"sha256 {sha}, expected {source.sha256}", sha
    if source.md5 and md5 != source.md5.lower():
        return f"md5 {md5}, expected {source.md5}", sha
    return None, sha


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _stream(url: str, part: Path, filename: str, timeout: float, progress: bool) -> None:
    """Append ``url`` to ``part`` from where it stops (HTTP Range), or start it afresh."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "metalearn-download/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            return  # nothing left to fetch: the part is complete (the checksum decides)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from e
    with response:
        content_type = response.headers.get("Content-Type", "").lower()
        if "text/html" in content_type and not filename.lower().endswith((".html", ".htm")):
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url} returned an HTML page instead of {filename} (a login, quota or error "
                "page?); nothing was written. Try a mirror or download it by hand."
            )
        resumed = offset and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise DownloadError(f"{url} answered the range request with the wrong range")
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        written = start
        mode = "ab" if resumed else "wb"
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=filename,
            disable=not progress,
        )
        try:
            with part.open(mode) as out:
                first = True
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise DownloadError(
                            f"{url}: connection lost after {written} bytes ({e}); run again "
                            "to resume"
                        ) from e
                    if not chunk:
                        break
                    if first and start == 0 and _looks_like_html(chunk):
                        out.close()
                        part.unlink(missing_ok=True)
                        raise DownloadError(
                            f"{url} returned an HTML page instead of {filename}; nothing was "
                            "written. Try a mirror or download it by hand."
                        )
                    first = False
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
        if total is not None and written < total:
            raise DownloadError(
                f"{url}: connection closed after {written} of {total} bytes; run again to resume"
            )


def fetch(
    source: Source, folder: str | PathLike[str], *, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download one :class:`Source` into ``folder`` and return the file's path.

    The bytes go to ``<filename>.part`` (resumed with an HTTP Range request when a previous
    attempt left one), are checked against the source's checksum, and only then renamed to
    ``<filename>`` in one atomic step. A file already in place that passes the check is kept.

    Raises:
        ChecksumError: the download does not match (the partial file is deleted).
        DownloadError: every URL failed; the message lists each failure.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / source.filename
    if dest.exists() and (not source.verified or _mismatch(source, dest)[0] is None):
        return dest
    part = folder / (source.filename + ".part")
    errors: list[str] = []
    for url in (source.url, *source.mirrors):
        try:
            _stream(url, part, source.filename, timeout, progress)
        except DownloadError as e:
            errors.append(str(e))
            continue
        if not part.exists():
            errors.append(f"{url}: no data received")
            continue
        problem, sha = _mismatch(source, part)
        if problem:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: checksum mismatch for {source.filename}: {problem}")
            continue
        os.replace(part, dest)
        if not source.verified:
            warnings.warn(
                f"{dest} has no published checksum and was NOT verified; its sha256 is {sha}",
                stacklevel=2,
            )
        return dest
    message = f"could not download {source.filename}:\n  " + "\n  ".join(errors)
    if errors and all("checksum mismatch" in e for e in errors):
        raise ChecksumError(message)
    raise DownloadError(message)


def download(
    name: str,
    root: str | PathLike[str],
    *,
    sources: Sequence[Source] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download dataset ``name`` into ``root`` so that its loader finds it there.

    Omniglot: ``images_background.zip`` and ``images_evaluation.zip`` (MD5-verified; the
    loader reads the zips directly). MiniImagenet: learn2learn's
    ``mini-imagenet-cache-{train,validation,test}.pkl`` (no published checksum; a warning
    shows the SHA-256 computed). See :data:`SOURCES` and :func:`fetch` for how each file is
    streamed, resumed, verified and moved into place.

    Args:
        name: ``"omniglot"`` or ``"miniimagenet"``.
        root: destination folder (created if needed).
        sources: use these instead of :data:`SOURCES` (mirrors, tests).
        progress: show a tqdm progress bar per file.
        timeout: socket timeout in seconds.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Example:
        >>> import metalearn as ml
        >>> ml.datasets.download("omniglot", "data/omniglot")  # doctest: +SKIP
        >>> train = ml.datasets.Omniglot("data/omniglot", "train")  # doctest: +SKIP
    """
    key = name.lower().replace("-", "").replace("_", "")
    if sources is None:
        if key not in SOURCES:
            raise ValueError(f"name must be one of {sorted(SOURCES)}, got {name!r}")
        sources = SOURCES[key]
    root = Path(root)
    for source in sources:
        fetch(source, root, progress=progress, timeout=timeout)
    return root
