"""Fetching and unpacking archives: a retried, resumable, md5-checked download and a bounded tar extraction
that stays in its folder and leaves nothing behind when it fails."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from nnrun.errors import UserInputError

ATTEMPTS = 5
"""Tries of a download before giving up."""
BACKOFF_SECONDS = 1.0
"""Wait before the second try; doubled before each next one."""
READ_TIMEOUT = 60.0
"""Seconds without a byte after which a connection counts as stalled."""
DEADLINE = 3 * 3600.0
"""Seconds after which a download is given up, however it goes (170 MB at 16 kB/s)."""
MIN_RATE = 1000
"""Bytes per second below which a connection counts as stalled, measured over `RATE_WINDOW` seconds (a server
trickling a byte every few seconds never trips the read timeout)."""
RATE_WINDOW = 60.0
"""Seconds over which `MIN_RATE` is measured."""
MAX_DOWNLOAD_BYTES = 1 << 30
"""Most bytes a download may have unless its caller says fewer."""
CHUNK = 1 << 16
"""Bytes read (and saved) at a time: what a reset loses at most."""
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
"""HTTP statuses worth another try; any other error status ends the download at once."""
MAX_MEMBERS = 1000
"""Most members an archive may have (the official CIFAR-10 archive has 8)."""
MAX_EXTRACT_BYTES = 1 << 30
"""Most bytes an archive may unpack to (the official CIFAR-10 archive: 178 MB)."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str, progress: bool = True, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download `url` to `dest`, verifying `md5` before `dest` appears.

    The bytes go to a hidden `.NAME.part` file beside `dest`. A connection that is reset, refused
    or stalls (no byte for `READ_TIMEOUT` seconds, or fewer than `MIN_RATE` bytes a second over `RATE_WINDOW`
    seconds) is tried again, up to `ATTEMPTS` times with exponential backoff from `BACKOFF_SECONDS`; the
    whole download is given up after `DEADLINE` seconds, and a file announced or growing past `max_bytes`
    bytes is refused at once; when the
    server answers `Range` requests the retry continues where the last one stopped. Only a complete
    file with the right checksum is renamed into place; whatever fails (network, a full or
    read-only disk, the checksum, an interrupt) removes the partial file and is one
    `UserInputError` naming the URL or the folder.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.parent / f".{dest.name}.part"
        part.unlink(missing_ok=True)
        part.touch()
    except OSError as e:
        raise UserInputError(f"cannot download into {dest.parent}: {e.strerror or e}; set data.root to a "
                             "writable folder") from None
    started = time.monotonic()
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if _fetch(url, part, progress, started + DEADLINE, max_bytes):
                    break
                problem = "the server closed the connection early"
            except urllib.error.HTTPError as e:
                if e.code not in RETRY_STATUS:
                    raise UserInputError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
                problem = f"HTTP {e.code} {e.reason}"
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
                problem = str(getattr(e, "reason", None) or e) or type(e).__name__
            wait = BACKOFF_SECONDS * 2 ** (attempt - 1)
            if attempt == ATTEMPTS or time.monotonic() - started + wait > DEADLINE:
                raise UserInputError(f"could not download {url}: {problem} (after {attempt} attempts, "
                                     f"{part.stat().st_size} bytes received)")
            time.sleep(wait)
        actual = md5sum(part)
        if actual != md5:
            raise UserInputError(
                f"checksum mismatch for {url}: md5 {actual}, expected {md5}; the download was discarded")
        os.replace(part, dest)
    except OSError as e:  # the local side: a full disk, a folder made read-only meanwhile
        raise UserInputError(f"cannot write the download {part}: {e.strerror or e}") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def _fetch(url: str, part: Path, progress: bool, deadline: float, max_bytes: int) -> bool:
    """One request for the rest of `url` after the bytes `part` holds (a `Range` request when it holds some);
    True when the body arrived complete. Network errors propagate, and so does a rate below `MIN_RATE` (as a
    `TimeoutError`); a server that ignores `Range` starts over. Past the monotonic `deadline`, or past
    `max_bytes` (announced or received), a `UserInputError`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    have = part.stat().st_size
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0
        length = int(response.headers.get("Content-Length") or 0) or None
        total = None if length is None else have + length
        if total is not None and total > max_bytes:
            raise UserInputError(f"could not download {url}: the server announces {total} bytes, more than the "
                                 f"{max_bytes} expected")
        window_start, window_bytes = time.monotonic(), 0
        with open(part, "ab" if resumed else "wb") as out, \
                Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                         TransferSpeedColumn(), disable=not progress, transient=True) as bar:
            task = bar.add_task(f"downloading {part.name.strip('.').removesuffix('.part')}", total=total,
                                completed=have)
            while block := response.read1(CHUNK):  # what has arrived: a trickle still reaches the checks
                have += len(block)
                if have > max_bytes:
                    raise UserInputError(f"could not download {url}: more than the {max_bytes} bytes expected")
                out.write(block)
                bar.update(task, completed=have)
                now = time.monotonic()
                if now > deadline:
                    raise UserInputError(f"could not download {url}: not complete after {DEADLINE:.0f} s "
                                         f"({have} bytes received); download it yourself, or use a mirror "
                                         "(data.url)")
                window_bytes += len(block)
                if now - window_start >= RATE_WINDOW:
                    if window_bytes < MIN_RATE * (now - window_start):
                        raise TimeoutError(f"slower than {MIN_RATE} bytes/s for {now - window_start:.0f} s")
                    window_start, window_bytes = now, 0
    return total is None or have == total


def extract_tarball(archive: Path, dest: Path, expect: str | None = None) -> None:
    """Extract `archive` into `dest`, refusing members that would land outside `dest` (or, with `expect`, outside
    the folder `dest/expect`), links and devices, more than `MAX_MEMBERS` members or `MAX_EXTRACT_BYTES`.

    Members go to a temporary folder inside `dest` first and are moved into place once all are out;
    a failed or interrupted extraction removes everything it wrote.
    """
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, total = [], 0
            for member in tar:
                members.append(member)
                total += member.size
                if len(members) > MAX_MEMBERS or total > MAX_EXTRACT_BYTES:
                    raise UserInputError(f"{archive}: more than {MAX_MEMBERS} members or {MAX_EXTRACT_BYTES >> 20} MiB "
                                         "unpacked; not the archive expected")
                target = (dest / member.name).resolve()
                if not (target == dest or target.is_relative_to(dest)):
                    raise UserInputError(f"{archive}: member {member.name!r} would be written outside {dest}")
                if not (member.isfile() or member.isdir()):
                    raise UserInputError(f"{archive}: member {member.name!r} is not a plain file or folder")
                if expect is not None and Path(member.name).parts[:1] != (expect,):
                    raise UserInputError(f"{archive}: member {member.name!r} is outside the folder {expect}/")
            tops = {Path(m.name).parts[0] for m in members}
            for top in tops:
                if (dest / top).exists():
                    raise UserInputError(f"cannot extract {archive}: {dest / top} already exists but holds no "
                                         "complete CIFAR-10 batches; move it away and run again")
            tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
            try:
                tar.extractall(tmp, members=members, filter="data")
                for top in tops:
                    os.replace(tmp / top, dest / top)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except UserInputError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise UserInputError(f"cannot extract {archive} into {dest}: {getattr(e, 'strerror', None) or e}") from None
