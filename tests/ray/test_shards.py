"""metaeol.ray.shards (no Ray needed): shards read on their own give exactly the rows of the
single-process reader, for every format and shard size."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _embed_checks import BOM_INPUTS
from metaeol.ray.shards import plan_input, read_shard
from metaeol.readers import InputError, read_rows


def write_inputs(tmp_path):
    csv_path = tmp_path / "in.csv"
    csv_path.write_bytes(
        'id,text\r\n1,"first, with comma"\r\n2,"spans\nthree\nlines"\r\n\r\n3\r\n4,"quote ""x"""\r\n5,é ü 日本\r\n'
        .encode())
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join([json.dumps({"text": "a"}), "{bad", json.dumps({"text": None}), "",
                                json.dumps({"text": "naïve\nline"}), json.dumps({"other": 1}), json.dumps({"text": "z"})]))
    txt = tmp_path / "in.txt"
    txt.write_bytes("one\r\ntwo\n\nthree é\nfour".encode())
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" if i % 5 else None for i in range(23)]}), parquet, row_group_size=4)
    return [csv_path, jsonl, txt, parquet]


@pytest.mark.parametrize("shard_size", [1, 2, 3, 7, 100])
def test_shards_concatenate_to_the_single_process_rows(tmp_path, shard_size):
    for path in write_inputs(tmp_path):
        plan = plan_input(path, "text", shard_size)
        expected = [text for _, text in read_rows(path, "text")]
        shards = plan.shards()
        assert plan.rows == len(expected) and len(shards) == -(-len(expected) // shard_size)
        assert [s.start for s in shards] == list(range(0, len(expected), shard_size))
        got = [row for shard in shards for row in read_shard(plan, shard)]
        assert got == expected, path.name
        assert plan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_changed_input_is_detected(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("a\nb\nc\n")
    plan = plan_input(path, "text", 2)
    path.write_text("a\nb\nc\nd\n")
    with pytest.raises(InputError, match="changed since the job was planned"):
        read_shard(plan, plan.shards()[0])
    path.unlink()
    with pytest.raises(InputError, match=r"in.txt changed since the job was planned \(No such file or directory\)"):
        read_shard(plan, plan.shards()[0])


@pytest.mark.parametrize("name, old, new", [
    ("in.csv", "é ü".encode(), "è ü".encode()), ("in.jsonl", b'"z"', b'"y"'), ("in.txt", b"four", b"fous"),
    ("in.parquet", b"row 22", b"row Q2"),
])
def test_a_same_size_edit_is_detected_in_the_shard_it_touches(tmp_path, name, old, new):
    path = next(p for p in write_inputs(tmp_path) if p.name == name)
    if name == "in.parquet":  # plain and uncompressed, so that the text is in the file's bytes
        pq.write_table(pq.read_table(path), path, row_group_size=4, compression="none", use_dictionary=False,
                       write_statistics=False)
    plan = plan_input(path, "text", 2)
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    shards = plan.shards()
    assert [row for shard in shards[:-1] for row in read_shard(plan, shard)]  # the other shards are unchanged
    with pytest.raises(InputError, match=rf"changed since the job was planned: rows \d+-{plan.rows - 1} "
                                         rf"\(shard {len(shards) - 1}\) are not the rows it planned on"):
        read_shard(plan, shards[-1])


def test_a_csv_field_longer_than_the_csv_modules_limit_is_read(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(f'id,text\n1,short\n2,"{"word " * 40_000}"\n3,end\n')  # 200,000 characters > 131,072
    plan = plan_input(path, "text", 2)
    assert [row for shard in plan.shards() for row in read_shard(plan, shard)] == [t for _, t in read_rows(path)]


def test_planning_errors(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    (tmp_path / "x.xlsx").write_text("")
    (tmp_path / "nul.jsonl").write_bytes(b'{"text": "a"}\n{"text": "b\x00"}\n')  # refused, as without Ray
    cases = [("bad.txt", "not valid UTF-8 text"), ("x.xlsx", "unsupported input type"), ("none.csv", "no such file"),
             ("nul.jsonl", r"nul.jsonl: not valid UTF-8 text \(a NUL byte \(binary data\?\) at byte 25\)")]
    for name, message in cases:
        with pytest.raises(InputError, match=message):
            plan_input(tmp_path / name, "text", 10)


def test_an_edit_while_planning_is_refused(tmp_path, monkeypatch):
    from metaeol.ray import shards

    path = tmp_path / "in.txt"
    path.write_text("a\nb\n")
    plan_lines = shards._plan_lines

    def plan_then_edit(*args):
        planned = plan_lines(*args)
        path.write_text("a\nbc\n")
        return planned

    monkeypatch.setattr(shards, "_plan_lines", plan_then_edit)
    with pytest.raises(InputError, match="in.txt changed while it was being read; rerun once it no longer changes"):
        plan_input(path, "text", 1)


@pytest.mark.parametrize("name, body", BOM_INPUTS)
def test_a_utf8_bom_is_skipped_as_without_ray(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    plan = plan_input(path, "text", 1)
    assert [row for shard in plan.shards() for row in read_shard(plan, shard)] == ["Hello there.", "Bye."]
