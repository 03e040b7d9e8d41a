"""Fetch the evaluation data into the SentEval layout and verify every file's sha256.

The manifest (``senteval_manifest.json``) lists sources. Each has a ``url``, a ``kind``
(``file``: the URL is the one file; ``tar``: an archive, any compression), an optional
``sha256`` of the download itself, and ``files``: destination path (relative to the data
root) -> sha256 of that file. Archive members are matched by path suffix, so the archive's
top-level folder does not matter. Nothing is written under the root unless it verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any, Callable

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed, a member is missing, or a checksum does not match."""


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The given manifest, or the packaged ``senteval_manifest.json``."""
    if path is None:
        text = resources.files("metaeol.evaluation").joinpath("senteval_manifest.json").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    manifest = json.loads(text)
    for source in manifest.get("sources", []):
        if source.get("kind") not in ("file", "tar") or not source.get("url") or not source.get("files"):
            raise DownloadError(f"malformed manifest source: {source.get('name') or source}")
        if source["kind"] == "file" and len(source["files"]) != 1:
            raise DownloadError(f"source {source['url']}: kind 'file' must list exactly one file")
    return manifest


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise DownloadError(f"checksum mismatch for {what}: expected sha256 {expected}, got {actual}")


def _fetch(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
            shutil.copyfileobj(response, f, CHUNK)
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise DownloadError(f"could not download {url}: {exc}") from exc


def _extract(archive: Path, wanted: list[str], into: Path, url: str) -> dict[str, Path]:
    """Copy the members whose paths end with each wanted path out of a tar archive."""
    out: dict[str, Path] = {}
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for rel in wanted:
            hits = [m for m in members if m.name == rel or m.name.endswith("/" + rel)]
            if not hits:
                raise DownloadError(f"{url}: archive has no member ending in {rel}")
            member = min(hits, key=lambda m: len(m.name))
            out[rel] = into / f"member{len(out)}"
            with tar.extractfile(member) as src, open(out[rel], "wb") as dst:  # type: ignore[union-attr]
                shutil.copyfileobj(src, dst, CHUNK)
    return out


def download(
    root: str | os.PathLike,
    manifest: dict[str, Any] | None = None,
    *,
    force: bool = False,
    timeout: float = 60.0,
    log: Callable[[str], None] = lambda msg: None,
) -> list[Path]:
    """Download every manifest source into ``root``; return the files written.

    Sources whose files are already present with the right checksums are skipped unless
    ``force``. Raises :class:`DownloadError` on any failure or checksum mismatch.
    """
    manifest = manifest if manifest is not None else load_manifest()
    root = Path(root)
    written: list[Path] = []
    for source in manifest["sources"]:
        url, files = source["url"], source["files"]
        present = all((root / rel).is_file() and sha256_file(root / rel) == sha for rel, sha in files.items())
        if present and not force:
            log(f"up to date: {url}")
            continue
        log(f"downloading {url}")
        with tempfile.TemporaryDirectory() as tmp:
            fetched = Path(tmp) / "download"
            _fetch(url, fetched, timeout)
            if source.get("sha256"):
                _verify(fetched, source["sha256"], url)
            else:
                log(f"warning: no pinned sha256 for {url}; verifying the extracted files only")
            if source["kind"] == "file":
                staged = {next(iter(files)): fetched}
            else:
                staged = _extract(fetched, list(files), Path(tmp), url)
            for rel, path in staged.items():
                _verify(path, files[rel], f"{rel} from {url}")
            for rel, path in staged.items():
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), target)
                written.append(target)
    return written
