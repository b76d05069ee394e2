"""One output-ownership rule for every writer, and destinations checked before any work (issue 11).

Tests run as root, which ignores permission bits, so "unwritable" destinations are ones that
fail for root too: a path under a regular file, a folder where a file must go, a file where a
folder must go, a dangling link.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.errors import OutputError
from radvqa.ownership import claim_output, safe_relative
from radvqa.sample import SAMPLE_RECORD
from radvqa.writers import write_json

runner = CliRunner()


def run(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture
def dataset(tmp_path: Path, tiny_copy: Path) -> Path:
    out = tmp_path / "out"
    code, output = run("generate", tiny_copy, "-o", out, "--quiet")
    assert code == 0, output
    return out


def test_overwrite_removes_only_what_the_manifest_lists(tmp_path: Path, tiny_copy: Path, dataset: Path) -> None:
    before = tree(dataset)
    (dataset / "benchmark" / "my-notes.md").write_text("mine")  # user files inside radvqa's folders
    (dataset / "stats").mkdir()
    (dataset / "stats" / "keep.csv").write_text("mine")
    (dataset / "stats" / "stats.md").write_text("radvqa's report name: removed")
    (dataset / "instruct" / "old-run.jsonl.bak").write_text("not listed: kept")
    code, output = run("generate", tiny_copy, "-o", dataset, "--quiet", "--overwrite", "--shard-size", "10")
    assert code == 0, output
    after = tree(dataset)
    assert "benchmark/my-notes.md" in after and "stats/keep.csv" in after
    assert "instruct/old-run.jsonl.bak" in after and "stats/stats.md" not in after
    old_shards = {p for p in before if "/train-" in p}
    assert len(old_shards) == 2 and not old_shards & set(after)  # earlier shards went (new names at --shard-size 10)
    assert ".radvqa-run.json" not in after


def test_overwrite_refuses_a_folder_radvqa_did_not_write(tmp_path: Path, tiny_copy: Path) -> None:
    out = tmp_path / "mine"
    for name in ("benchmark", "instruct", "alignment", "stats"):
        (out / name).mkdir(parents=True)
        (out / name / "data.txt").write_text("mine")
    (out / "README.md").write_text("my readme")
    code, output = run("generate", tiny_copy, "-o", out, "--overwrite")
    assert code == 1
    assert output == (
        f"ERROR: {out}: folder is not empty and holds no radvqa record (README.md, alignment, benchmark and 2 more); "
        "radvqa only replaces what it wrote: choose an empty or new folder\n"
    )
    assert tree(out) == sorted(
        ["README.md"] + [f"{n}{s}" for n in ("alignment", "benchmark", "instruct", "stats") for s in ("", "/data.txt")]
    )
    assert (out / "README.md").read_text() == "my readme"


def test_a_hostile_record_cannot_reach_outside_its_folder(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    write_json(out / "record.json", {"files": ["../victim.txt", str(victim), "a/../../victim.txt", "ok.txt"]})
    (out / "ok.txt").write_text("ours")
    assert safe_relative(["../victim.txt", str(victim), "ok.txt"]) == ["ok.txt"]
    removed = claim_output(out, True, lambda folder: json.loads((folder / "record.json").read_text())["files"])
    assert removed == ["ok.txt"] and victim.read_text() == "keep"


def test_make_sample_overwrite_and_images_per_class(tmp_path: Path) -> None:
    dest = tmp_path / "sample"
    assert run("make-sample", dest, "--images-per-class", "3")[0] == 0
    first = tree(dest)
    (dest / "notes.txt").write_text("mine")
    code, output = run("make-sample", dest)
    assert code == 1 and output == f"ERROR: {dest}: folder is not empty; pass --overwrite to replace a previous output\n"
    code, output = run("make-sample", dest, "--overwrite", "--images-per-class", "3")
    assert code == 0, output
    assert tree(dest) == sorted(first + ["notes.txt"])
    for bad in ("0", "-5"):
        code, output = run("make-sample", tmp_path / f"bad{bad}", "--images-per-class", bad)
        assert code == 1 and output == f"ERROR: --images-per-class must be at least 1, not {bad}\n"
        assert not (tmp_path / f"bad{bad}").exists()


def test_make_sample_killed_part_way_is_still_its_own_to_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "sample"
    command = [str(Path(sys.executable).with_name("radvqa")), "make-sample", str(dest), "--images-per-class", "150"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list(dest.glob("radiology_ai/CT/*/*/*.png"))) < 50:  # part-way: some images written
        assert proc.poll() is None and time.monotonic() < deadline, "make-sample finished before it could be killed"
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=15)
    assert not (dest / "RadiologyAI_test.csv").exists()  # really stopped part-way
    recorded = json.loads((dest / SAMPLE_RECORD).read_text())["files"]
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.png")} < set(recorded)
    code, output = run("make-sample", dest)  # the record says the folder is ours: --overwrite may replace it
    assert code == 1 and "pass --overwrite" in output
    code, output = run("make-sample", dest, "--overwrite", "--images-per-class", "3")
    assert code == 0, output
    fresh = tmp_path / "fresh"
    assert run("make-sample", fresh, "--images-per-class", "3")[0] == 0
    assert tree(dest) == tree(fresh)


def test_generate_sample_overwrite_replaces_its_own_copy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run("generate", "--sample", "-o", out, "--quiet")[0] == 0
    first = tree(out)
    code, output = run("generate", "--sample", "-o", out, "--quiet", "--overwrite")
    assert code == 0, output
    assert tree(out) == first


@pytest.mark.parametrize("kind", ["under-a-file", "a-file", "dangling-link"])
def test_bad_folder_destinations_are_one_line_before_any_work(tmp_path: Path, tiny_copy: Path, kind: str) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    if kind == "under-a-file":
        dest, message = blocker / "out", f"{blocker / 'out'}: cannot be created, {blocker} is a file"
    elif kind == "a-file":
        dest, message = blocker, f"{blocker}: exists and is not a folder"
    else:
        dest = tmp_path / "link"
        dest.symlink_to(tmp_path / "nowhere")
        message = f"{dest}: {dest} is a dangling link"
    dataset = tmp_path / "ds"
    assert run("generate", tiny_copy, "-o", dataset, "--quiet")[0] == 0
    commands = [
        ["generate", tiny_copy, "-o", dest],
        ["make-sample", dest],
        ["export", dataset, "-f", "llava", "-o", dest],
        ["stats", dataset, "-o", dest],
    ]
    for command in commands:
        code, output = run(*command)
        assert code == 1 and output.startswith("ERROR: ") and message in output, (command, output)
        assert output.count("\n") == 1 and "Traceback" not in output
    assert blocker.read_text() == "x" and tree(tmp_path / "ds") == tree(dataset)


def test_split_destination_checked_before_reading_the_copy(tmp_path: Path, tiny_copy: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, output = run("split", tiny_copy, "-o", folder)
    assert (code, output) == (1, f"ERROR: --output {folder}: is a folder; give a file name\n")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, output = run("split", tiny_copy, "-o", blocker / "splits.csv")
    assert (code, output) == (1, f"ERROR: --output {blocker}: cannot be created, {blocker} is a file\n")
    mine = tmp_path / "mine.csv"
    mine.write_text("a,b\n1,2\n")
    code, output = run("split", tiny_copy, "-o", mine, "--overwrite")
    assert (code, output) == (1, f"ERROR: --output {mine}: exists and was not written by `radvqa split`; choose another name\n")
    assert mine.read_text() == "a,b\n1,2\n" and not (tmp_path / "mine.json").exists()
    ours = tmp_path / "splits.csv"
    assert run("split", tiny_copy, "-o", ours, "--quiet")[0] == 0
    code, output = run("split", tiny_copy, "-o", ours, "--quiet")
    assert (code, output) == (1, f"ERROR: {ours}: exists; pass --overwrite to replace it\n")
    assert run("split", tiny_copy, "-o", ours, "--quiet", "--overwrite")[0] == 0


def test_json_reports_checked_first_and_written_atomically(tmp_path: Path, dataset: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("")
    for command in (["validate", dataset], ["validate-distractors", dataset], ["audit", dataset],
                    ["evaluate", dataset, predictions]):
        code, output = run(*command, "--json", folder)
        assert (code, output) == (1, f"ERROR: --json {folder}: is a folder; give a file name\n"), command
        code, output = run(*command, "--json", blocker / "r.json")
        assert (code, output) == (1, f"ERROR: --json {blocker}: cannot be created, {blocker} is a file\n"), command
    report = tmp_path / "reports" / "validate.json"  # a missing folder is created
    code, output = run("validate", dataset, "--json", report, "--quiet")
    assert code == 0, output
    assert json.loads(report.read_text())["ok"] is True
    assert tree(report.parent) == ["validate.json"]  # no temporary left beside it


def test_a_refused_write_is_one_output_error(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # renaming a file over a folder fails, for root too
    with pytest.raises(OutputError, match=f"^{target}: cannot write"):
        write_json(target, {"a": 1})
    assert tree(tmp_path) == ["taken"]


def test_a_record_cannot_reach_through_a_folder_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shard.jsonl").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "alignment").symlink_to(elsewhere)
    removed = claim_output(out, True, lambda folder: ["alignment/shard.jsonl"])
    assert removed == [] and (elsewhere / "shard.jsonl").read_text() == "keep"
