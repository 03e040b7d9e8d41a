"""Model loading and the other commands fail with one clear line, never a traceback."""

import hashlib
import json

import pytest
import torch
from click.testing import CliRunner

from metaeol import MetaEOL
from metaeol.cli import main
from metaeol.loading import ModelLoadError, check_device


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAEOL_CACHE", str(tmp_path / "cache"))


def one_line_error(args, *fragments):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, AssertionError)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def missing_device() -> str:
    return f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: never there


def test_an_unavailable_device_names_it_and_what_is_available(stories_gguf):
    with pytest.raises(ModelLoadError, match=rf"device '{missing_device()}' is not available .*; available: cpu"):
        MetaEOL(str(stories_gguf), device=missing_device())
    with pytest.raises(ModelLoadError, match="unknown device 'gpu'; available: cpu"):
        check_device("gpu")
    assert check_device("cpu") == torch.device("cpu")
    one_line_error(["demo", "-m", str(stories_gguf), "--device", missing_device()], f"'{missing_device()}'",
                   "available: cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_not_a_bare_assertion(stories_gguf):
    with pytest.raises(ModelLoadError, match="device 'cuda' is not available .*; available: cpu"):
        MetaEOL(str(stories_gguf), device="cuda")


def test_a_truncated_gguf_names_the_file(stories_gguf, tmp_path):
    data = stories_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=rf"{cut} cannot be read .*truncated or corrupt"):
        MetaEOL(str(cut))
    (tmp_path / "in.txt").write_text("a\n")
    one_line_error(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "-m", str(cut)], str(cut))
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(ModelLoadError, match=rf"{not_gguf} is not a GGUF file"):
        MetaEOL(str(not_gguf))


def test_a_folder_that_is_not_a_model(stories_gguf, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match=rf"{folder} is not a model folder: it has no config.json"):
        MetaEOL(str(folder))
    (folder / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match=rf"pass the .gguf file itself, e.g. {folder / 'model.gguf'}"):
        MetaEOL(str(folder))
    one_line_error(["demo", "-m", str(folder)], "is not a model folder")


def test_store_commands_on_a_file_that_is_not_a_store(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("not a database, just text " * 100)
    one_line_error(["store", "info", "--path", str(path)], str(path), "file is not a database")
    one_line_error(["store", "prune", "--path", str(path), "--all"], str(path), "file is not a database")


def test_templates_generate_into_an_unwritable_place(fake_server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    fake_server.reply('1. Here is a sentence: "{s}". It is about the mood, in one word:"')
    one_line_error(["templates", "generate", "--base-url", fake_server.base_url, "--model", "m", "-t", "SA", "-n", "1",
                    "--retries", "0", "-o", str(blocker / "set.yaml")], f"{blocker} is a file, not a folder")


def test_download_data_into_an_unwritable_place(tmp_path):
    payload = tmp_path / "STS.input.txt"
    payload.write_text("a\tb\n")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"sources": [{
        "name": "one file", "kind": "file", "url": payload.as_uri(),
        "files": {"STS/x.txt": hashlib.sha256(payload.read_bytes()).hexdigest()},
    }]}))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_line_error(["download-data", "--data", str(blocker / "data"), "--manifest", str(manifest)], f"{blocker} is a file, not a folder")
