from collections import Counter

import pytest

from metaeol.evaluation.data import (
    ALL_TASKS,
    DataError,
    Labelled,
    Pairs,
    load_task,
    parse_tasks,
    resolve_data_root,
)

from _eval_toys import tiny_layout, write


# Sizes from shared/data/README.md: items per split (STS12-16: scored pairs per subset).
EXPECTED = {
    "STS12": {"MSRpar": 750, "MSRvid": 750, "SMTeuroparl": 459, "surprise.OnWN": 750, "surprise.SMTnews": 399},
    "STS13": {"FNWN": 189, "headlines": 750, "OnWN": 561},
    "STS-B": {"test": 1379},
    "SICK-R": {"test": 4927},
    "MR": {"all": 10662},
    "CR": {"all": 3775},
    "SUBJ": {"all": 10000},
    "MPQA": {"all": 10606},
    "SST2": {"train": 67349, "dev": 872, "test": 1821},
    "TREC": {"train": 5452, "test": 500},
    "MRPC": {"train": 4076, "test": 1725},
}
TOTALS = {"STS14": 3750, "STS15": 3000, "STS16": 1186}


def test_standard_data_counts(senteval_root):
    for name in ALL_TASKS:
        task = load_task(name, senteval_root)
        sizes = {k: len(v) for k, v in task.splits.items()}
        if name in EXPECTED:
            assert sizes == EXPECTED[name], name
        else:
            assert sum(sizes.values()) == TOTALS[name], name


def test_data_details(senteval_root):
    cr = load_task("CR", senteval_root).splits["all"]
    assert cr.sentences.count("") == 4  # empty lines kept with their labels, as SentEval does
    assert load_task("MPQA", senteval_root).splits["all"].sentences.count("") == 3
    trec = load_task("TREC", senteval_root).splits["test"]
    assert Counter(trec.labels.tolist()) == {1: 138, 5: 113, 2: 94, 4: 81, 3: 65, 0: 9}
    mrpc = load_task("MRPC", senteval_root).splits["train"]
    assert mrpc.targets[:2].tolist() == [1, 0]
    stsb = load_task("STS-B", senteval_root, split="dev").splits["dev"]
    assert len(stsb) == 1500 and any('"' in s for s in stsb.sent1 + stsb.sent2)  # quoting disabled
    assert len(load_task("SICK-R", senteval_root, split="dev").splits["dev"]) == 500
    if "shared" in senteval_root.parts:  # the real files' first items
        assert trec.sentences[0] == "How far is it from Denver to Aspen ?"
        assert mrpc.sent1[0].startswith("Amrozi accused")


def test_limit_keeps_first_items_per_file(senteval_root):
    mr = load_task("MR", senteval_root, limit=5).splits["all"]
    assert isinstance(mr, Labelled) and mr.labels.tolist() == [1] * 5 + [0] * 5
    sts = load_task("STS12", senteval_root, limit=7)
    assert all(isinstance(p, Pairs) and len(p) == 7 for p in sts.splits.values())


def test_whitespace_is_normalised_like_senteval(tmp_path):
    write(tmp_path / "STS/STS13-en-test/STS.input.FNWN.txt", "a  b \t c   d \n")
    write(tmp_path / "STS/STS13-en-test/STS.gs.FNWN.txt", "1.0\n")
    for name in ("headlines", "OnWN"):
        write(tmp_path / f"STS/STS13-en-test/STS.input.{name}.txt", "x\ty\n")
        write(tmp_path / f"STS/STS13-en-test/STS.gs.{name}.txt", "2\n")
    pairs = load_task("STS13", tmp_path, check_counts=False).splits["FNWN"]
    assert (pairs.sent1[0], pairs.sent2[0]) == ("a b", "c d")


def test_missing_file_is_named(tmp_path):
    tiny_layout(tmp_path)
    with pytest.raises(DataError, match=r"missing data file: .*SUBJ/subj.objective"):
        load_task("SUBJ", tmp_path)


def test_malformed_line_names_file_and_line(tmp_path):
    tiny_layout(tmp_path)
    write(tmp_path / "STS/STS13-en-test/STS.input.OnWN.txt", "a\tb\nonly one field\nc\td\ne\tf\n")
    with pytest.raises(DataError, match=r"STS.input.OnWN.txt:2: expected 2 tab-separated"):
        load_task("STS13", tmp_path, check_counts=False)


def test_count_mismatch_is_an_error_unless_disabled(tmp_path):
    tiny_layout(tmp_path)
    with pytest.raises(DataError, match=r"rt-polarity.pos: expected 5331 items, found 12"):
        load_task("MR", tmp_path)
    assert len(load_task("MR", tmp_path, check_counts=False).splits["all"]) == 24


def test_task_specs_and_data_root(tmp_path):
    assert parse_tasks("sts") == ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R"]
    assert parse_tasks("stsb, sick,mr,STS-B") == ["STS-B", "SICK-R", "MR"]
    assert len(parse_tasks("all")) == 14
    with pytest.raises(DataError, match="unknown task 'STS17'"):
        parse_tasks("STS17")
    assert resolve_data_root(tmp_path) == tmp_path
    with pytest.raises(DataError, match="is not a directory"):
        resolve_data_root(tmp_path / "nope")


def test_data_root_from_environment_and_missing_data_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("METAEOL_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()
    with pytest.raises(DataError, match=rf"`metaeol download-data --data {tmp_path}`"):
        load_task("STS-B", tmp_path)


def test_task_split_specs():
    from metaeol.evaluation.data import parse_task_split, task_label

    assert parse_task_split("STS-B:dev") == ("STS-B", "dev")
    assert parse_task_split("stsb-dev") == ("STS-B", "dev")  # the sweep's older spelling
    assert parse_task_split("sick", "test") == ("SICK-R", "test")
    assert task_label(*parse_task_split("SICK-R")) == "SICK-R-test" and task_label("STS12", "test") == "STS12"
    with pytest.raises(DataError, match="only a test split"):
        parse_task_split("STS12:dev")
    with pytest.raises(DataError, match="unknown split"):
        parse_task_split("STS-B:train")


def test_eval_task_specs_name_one_split():
    from metaeol.evaluation.data import parse_tasks_and_split

    assert parse_tasks_and_split("sts") == (parse_tasks("sts"), "test")
    assert parse_tasks_and_split("STS-B:dev,sick-dev,MR") == (["STS-B", "SICK-R", "MR"], "dev")
    # --split dev applies to STS-B and SICK-R only: transfer tasks stay valid beside it
    assert parse_tasks_and_split("MR,STS-B", "dev") == (["MR", "STS-B"], "dev")
    assert parse_tasks_and_split("STS-B:test", "dev") == (["STS-B"], "test")
    with pytest.raises(DataError, match="STS-B:dev, SICK-R:test name different ones"):
        parse_tasks_and_split("STS-B:dev,SICK-R:test")
    with pytest.raises(DataError, match="only a test split"):
        parse_tasks_and_split("MR:dev")
    with pytest.raises(DataError, match="no tasks"):
        parse_tasks_and_split(" , ")


def test_sts_spec_lists():
    from metaeol.evaluation.data import parse_sts_specs

    seven = [("STS12", "test"), ("STS13", "test"), ("STS14", "test"), ("STS15", "test"), ("STS16", "test"),
             ("STS-B", "test"), ("SICK-R", "test")]
    assert parse_sts_specs("sts") == seven
    assert parse_sts_specs("STS-B:dev, sts, STS12") == [("STS-B", "dev"), *seven]  # repeats dropped
    assert parse_sts_specs("SICK-R", "dev") == [("SICK-R", "dev")]
    with pytest.raises(DataError, match="^MR, TREC: not an STS task"):
        parse_sts_specs("STS12,MR,TREC")
    with pytest.raises(DataError, match="no tasks in ' , '"):
        parse_sts_specs(" , ")
