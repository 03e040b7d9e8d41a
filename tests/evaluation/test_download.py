import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest
from click.testing import CliRunner

from metaeol.cli import main
from metaeol.evaluation.download import DownloadError, download, load_manifest

FILES = {"STS/STS12-en-test/STS.gs.MSRpar.txt": b"4.0\n", "MR/rt-polarity.pos": b"good movie .\n"}
SINGLE = ("SST/binary/sentiment-dev", b"nice .\t1\n")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a tar.gz bundle and one plain file."""
    served = tmp_path / "served"
    served.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in FILES.items():
            info = tarfile.TarInfo(f"bundle/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (served / "bundle.tar.gz").write_bytes(buf.getvalue())
    (served / "sentiment-dev").write_bytes(SINGLE[1])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _sha(buf.getvalue())
    httpd.shutdown()
    thread.join()


def _manifest(base, bundle_sha, files=None):
    return {"sources": [
        {"url": f"{base}/bundle.tar.gz", "kind": "tar", "sha256": bundle_sha,
         "files": files or {rel: _sha(data) for rel, data in FILES.items()}},
        {"url": f"{base}/sentiment-dev", "kind": "file", "sha256": None, "files": {SINGLE[0]: _sha(SINGLE[1])}},
    ]}


def test_download_cli_fetches_verifies_and_skips(server, tmp_path):
    base, bundle_sha = server
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(_manifest(base, bundle_sha)))
    root = tmp_path / "data"
    result = CliRunner().invoke(main, ["download-data", "--data", str(root), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    for rel, data in [*FILES.items(), SINGLE]:
        assert (root / rel).read_bytes() == data
    assert "no pinned sha256" in result.output  # the plain file has no download checksum
    again = CliRunner().invoke(main, ["download-data", "--data", str(root), "--manifest", str(manifest)])
    assert "0 files written" in again.output and "up to date" in again.output


def test_checksum_mismatch_names_file_and_writes_nothing(server, tmp_path):
    base, bundle_sha = server
    files = {rel: _sha(data) for rel, data in FILES.items()} | {"MR/rt-polarity.pos": "0" * 64}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(_manifest(base, bundle_sha, files)))
    root = tmp_path / "data"
    result = CliRunner().invoke(main, ["download-data", "--data", str(root), "--manifest", str(manifest)])
    assert result.exit_code == 1
    assert "checksum mismatch for MR/rt-polarity.pos" in result.output
    assert not root.exists()


def test_archive_checksum_and_missing_member(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="checksum mismatch for .*bundle.tar.gz"):
        download(tmp_path, _manifest(base, "f" * 64))
    _, bundle_sha = server
    with pytest.raises(DownloadError, match="no member ending in TREC/x"):
        download(tmp_path, _manifest(base, bundle_sha, {"TREC/x": "0" * 64}))
    with pytest.raises(DownloadError, match="could not download"):
        download(tmp_path, {"sources": [{"url": f"{base}/absent", "kind": "file", "files": {"a": "0" * 64}}]})


def test_packaged_manifest_is_well_formed():
    manifest = load_manifest()
    files = [rel for source in manifest["sources"] for rel in source["files"]]
    assert len(files) == len(set(files)) == 69
    assert all(len(sha) == 64 for source in manifest["sources"] for sha in source["files"].values())
