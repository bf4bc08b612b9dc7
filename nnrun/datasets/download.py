"""Fetching and unpacking archives: an md5-checked download and a tar extraction that stays in its folder."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from nnrun.errors import UserInputError


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str, progress: bool = True) -> Path:
    """Download `url` to `dest`, verifying `md5` before `dest` appears.

    The bytes go to a temporary file beside `dest`; only a complete file with the right
    checksum is renamed into place, so a partial or corrupt download never looks complete.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except (urllib.error.URLError, OSError) as e:
                raise UserInputError(f"could not download {url}: {e}") from None
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), disable=not progress, transient=True) as bar:
                    task = bar.add_task(f"downloading {dest.name}", total=total)
                    received = 0
                    while block := response.read(1 << 20):
                        out.write(block)
                        received += len(block)
                        bar.update(task, advance=len(block))
            if total is not None and received != total:
                raise UserInputError(f"download of {url} stopped after {received} of {total} bytes")
        actual = md5sum(tmp)
        if actual != md5:
            raise UserInputError(
                f"checksum mismatch for {url}: md5 {actual}, expected {md5}; the download was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_tarball(archive: Path, dest: Path) -> None:
    """Extract `archive` into `dest`, refusing members that would land outside `dest`."""
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                target = (dest / member.name).resolve()
                if not (target == dest or target.is_relative_to(dest)):
                    raise UserInputError(f"{archive}: member {member.name!r} would be written outside {dest}")
                if not (member.isfile() or member.isdir()):
                    raise UserInputError(f"{archive}: member {member.name!r} is not a plain file or folder")
            with tempfile.TemporaryDirectory(dir=dest, prefix=".extract-") as tmp:
                tar.extractall(tmp, members=members, filter="data")
                for top in {Path(m.name).parts[0] for m in members}:
                    final = dest / top
                    if final.exists():
                        raise UserInputError(
                            f"cannot extract {archive}: {final} already exists but holds no complete "
                            "CIFAR-10 batches; move it away and run again")
                    os.replace(Path(tmp) / top, final)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserInputError(f"cannot extract {archive}: {e}") from None
