"""radvqa browse: the stratified sample, one read per shard, the output folder rules, and the
page itself in a real headless Chromium (filters, keyboard, phone width, no network request)."""

from __future__ import annotations

import builtins
import io
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image
from typer.testing import CliRunner

from chromium_helpers import Chromium, find_chromium
from radvqa import browse
from radvqa.cli import app
from radvqa.config import Config
from radvqa.dataset import generate_dataset
from radvqa.dataset_files import dataset_parts, iter_records, load_manifest
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet

runner = CliRunner()


def run(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def index_of(gallery: Path) -> dict[str, Any]:
    """The JSON index: data.js, or the script inlined in a single-file index.html."""
    if (gallery / browse.DATA_FILE).exists():
        raw = (gallery / browse.DATA_FILE).read_bytes()
    else:
        html = (gallery / "index.html").read_bytes()
        raw = html[html.index(browse.DATA_PREFIX) :]
        raw = raw[: raw.index(b"</script>")]
    assert raw.startswith(browse.DATA_PREFIX) and raw.rstrip().endswith(b";")
    data: dict[str, Any] = orjson.loads(raw[len(browse.DATA_PREFIX) :].rstrip().rstrip(b";"))
    return data


def images_per_stratum(out: Path) -> dict[tuple[str, str, str], set[str]]:
    """(split, modality, label) -> image paths, read straight from the shards."""
    table: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for part in dataset_parts(out, load_manifest(out)):
        for record in iter_records(part.files):
            table[(record["split"], record["modality"], record["label"])].add(record["image"])
    return table


@pytest.fixture(scope="module")
def gallery(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("gallery") / "g"
    result = run("browse", sample_dataset, "-o", dest, "--per-class", 2, "--quiet")
    assert result.exit_code == 0, result.output
    return dest


# ---------------------------------------------------------------- the sample


def test_per_class_sample_of_every_split(sample_dataset: Path, gallery: Path) -> None:
    data = index_of(gallery)
    available = images_per_stratum(sample_dataset)
    shown = Counter((c["split"], c["modality"], c["label"]) for c in data["images"])
    assert set(shown) == set(available)  # every class of every split has a card
    for stratum, images in available.items():
        assert shown[stratum] == min(2, len(images)), stratum
    assert {c["image"] for c in data["images"]} <= set().union(*available.values())
    assert data["splits"] == ["train", "val", "test"]


def test_cards_hold_caption_nine_questions_and_the_marked_answer(sample_dataset: Path, gallery: Path) -> None:
    data = index_of(gallery)
    by_id = {}
    for part in dataset_parts(sample_dataset, load_manifest(sample_dataset)):
        for record in iter_records(part.files):
            by_id[record["id"]] = record
    for card in data["images"]:
        assert len(card["questions"]) == 9
        assert bool(card["caption"]) == (card["split"] != "test")  # the benchmark has no caption config
        if card["caption"]:
            assert by_id[f"{card['key']}-caption"]["answer"] == card["caption"]
        for question in card["questions"]:
            record = by_id[f"{card['key']}-{question['slot']}"]
            assert question["tid"] == record["template_id"]
            assert question["answer"] == record["answer"]
            if question["type"] == "multiple_choice":
                assert question["choices"] == record["choices"]
                assert question["choices"]["ABCD".index(question["answer"])] == record["answer_text"]
                assert not question["q"].endswith(record["choices"][-1])  # the stem, options shown apart
                assert record["question"].startswith(question["q"])
            else:
                assert question["q"] == record["question"]
        thumb = gallery / card["thumb"]
        with Image.open(thumb) as image:
            assert image.format == "PNG" and max(image.size) <= browse.THUMB_SIZE


def test_benchmark_flag_takes_every_benchmark_image(sample_dataset: Path, tmp_path: Path) -> None:
    result = run("browse", sample_dataset, "-o", tmp_path / "g", "--split", "test", "--benchmark")
    assert result.exit_code == 0, result.output
    data = index_of(tmp_path / "g")
    manifest = load_manifest(sample_dataset)
    assert len(data["images"]) == manifest["benchmark"]["images"]
    assert {c["split"] for c in data["images"]} == {"test"}
    strata = data["strata"]
    assert strata["images"] == manifest["benchmark"]["images"]
    assert strata["questions"] == manifest["records"]["benchmark"]["test"]
    assert sum(row["images"] for row in strata["strata"]) == strata["images"]
    assert len(strata["strata"]) == manifest["benchmark"]["strata_covered"]
    for slot, letters in strata["letters"].items():  # the benchmark's letters are exactly balanced
        assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1, slot
    assert set(strata["yes_no"]) >= {"anatomy_closed_yes", "anatomy_closed_no", "abnormality_closed"}
    assert "wrote a gallery of" in result.output and " s\n" in result.output  # the time is in the summary


def test_the_sample_depends_on_seed_not_on_shard_layout(
    sample_dataset: Path, sample_copy: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet, tmp_path: Path
) -> None:
    resharded = tmp_path / "resharded"
    generate_dataset(sample_copy, resharded, config.with_overrides(shard_size=700), taxonomy, templates)
    assert len(list((resharded / "instruct").glob("train-*.jsonl"))) > 1
    keys = {}
    for name, out, seed in (("a", sample_dataset, 0), ("b", resharded, 0), ("c", sample_dataset, 1)):
        browse.build_gallery(out, tmp_path / name, per_class=1, splits=("train",), seed=seed)
        keys[name] = [c["key"] for c in index_of(tmp_path / name)["images"]]
    assert keys["a"] == keys["b"]
    assert keys["a"] != keys["c"] and len(keys["a"]) == len(keys["c"])


def test_each_shard_is_read_once(sample_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: Counter[str] = Counter()

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith(".jsonl"):
            opened[str(path)] += 1
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(browse, "open", counting_open, raising=False)
    result = browse.build_gallery(sample_dataset, tmp_path / "g")
    shards = {str(p) for p in sample_dataset.glob("*/*.jsonl")}
    assert set(opened) == shards and set(opened.values()) == {1}
    assert result.shards_read == len(shards)


def test_records_without_the_id_first_give_the_same_gallery(sample_dataset: Path, tmp_path: Path) -> None:
    """The fast path slices the id from the line; other key orders and blank lines take the slow path."""
    reordered = tmp_path / "reordered"
    shutil.copytree(sample_dataset, reordered)
    for shard in [*reordered.glob("alignment/val-*.jsonl"), *reordered.glob("instruct/val-*.jsonl")]:
        lines = [orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS) for line in shard.read_bytes().splitlines()]
        shard.write_bytes(b"\n\n".join(lines))  # blank lines between records, none at the end
    for name, out in (("a", sample_dataset), ("b", reordered)):
        browse.build_gallery(out, tmp_path / name, per_class=2, splits=("val",))
    assert index_of(tmp_path / "a")["images"] == index_of(tmp_path / "b")["images"]


# ---------------------------------------------------------------- output rules


def test_single_file_holds_everything(sample_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    shutil.copytree(sample_dataset, out)
    (out / "stats").mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "navy").save(buffer, format="PNG")
    (out / "stats" / "regions.png").write_bytes(buffer.getvalue())
    result = run("browse", out, "-o", tmp_path / "g", "--per-class", 1, "--single-file", "--split", "val")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["index.html", browse.RECORD_FILE]
    html = (tmp_path / "g" / "index.html").read_text()
    assert "<script src" not in html and "<link" not in html and 'src="thumbs' not in html
    data = index_of(tmp_path / "g")
    assert all(c["thumb"].startswith("data:image/png;base64,") for c in data["images"])
    assert data["charts"] == [{"name": "regions", "src": browse._data_url(buffer.getvalue())}]


def test_script_json_cannot_close_its_script_element() -> None:
    text = browse._script_json({"caption": "</script><script>alert(1)</script>"})
    assert b"<" not in text and orjson.loads(text)["caption"].startswith("</script>")


def test_refuses_a_folder_it_did_not_write(sample_dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    for extra in ((), ("--overwrite",)):
        result = run("browse", sample_dataset, "-o", dest, *extra)
        assert result.exit_code == 1
        assert "holds no radvqa gallery (notes.txt)" in result.output
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_exactly_the_previous_gallery(sample_dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "g"
    assert run("browse", sample_dataset, "-o", dest, "--per-class", 1, "-q").exit_code == 0
    before = {p.name for p in (dest / "thumbs").iterdir()}
    (dest / "my-notes.md").write_text("mine")
    refused = run("browse", sample_dataset, "-o", dest, "--per-class", 1, "--seed", 5)
    assert refused.exit_code == 1 and "pass --overwrite" in refused.output
    result = run("browse", sample_dataset, "-o", dest, "--per-class", 1, "--seed", 5, "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    after = {p.name for p in (dest / "thumbs").iterdir()}
    assert after != before and len(after) == len(before)  # stale thumbnails of the old sample are gone
    assert (dest / "my-notes.md").read_text() == "mine"
    record = orjson.loads((dest / browse.RECORD_FILE).read_bytes())
    assert record["complete"] is True
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == {*record["files"], browse.RECORD_FILE, "my-notes.md"}
    assert index_of(dest)["seed"] == 5


def test_bad_input_is_one_line(sample_dataset: Path, tmp_path: Path) -> None:
    result = run("browse", sample_dataset, "-o", tmp_path / "g", "--split", "trian")
    assert result.exit_code == 1 and "did you mean 'train'" in result.output
    result = run("browse", sample_dataset, "-o", tmp_path / "g", "--root", tmp_path / "nowhere")
    assert result.exit_code == 1 and "RadImageNet copy not found" in result.output
    assert run("browse", sample_dataset, "-o", tmp_path / "g", "--per-class", 0).exit_code == 2
    result = run("browse", tmp_path, "-o", tmp_path / "g")
    assert result.exit_code == 1 and "manifest.json: not found" in result.output
    assert not (tmp_path / "g").exists()  # refused before any work

    broken = tmp_path / "broken"
    shutil.copytree(sample_dataset, broken)
    shard = broken / "instruct" / "val-00000-of-00001.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))
    result = run("browse", broken, "-o", tmp_path / "g2", "--split", "val")
    assert result.exit_code == 1 and f"{shard}:4: not a JSON record" in result.output
    assert "Traceback" not in result.output


def test_missing_images_are_counted_not_fatal(sample_dataset: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-copy"
    empty.mkdir()
    result = run("browse", sample_dataset, "-o", tmp_path / "g", "--root", empty, "--split", "val", "--per-class", 1)
    assert result.exit_code == 0, result.output
    data = index_of(tmp_path / "g")
    assert f"warning: {len(data['images'])} of {len(data['images'])} images could not be read" in result.output
    assert all(c["thumb"] is None for c in data["images"])


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")
    return binary


@pytest.fixture(scope="module")
def gallery_with_charts(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-image-per-class gallery of a dataset whose stats report has a chart."""
    base = tmp_path_factory.mktemp("charted")
    shutil.copytree(sample_dataset, base / "ds")
    (base / "ds" / "stats").mkdir()
    Image.new("RGB", (300, 120), "teal").save(base / "ds" / "stats" / "regions.png")
    result = run("browse", base / "ds", "-o", base / "g", "--per-class", 1, "-q")
    assert result.exit_code == 0, result.output
    return base / "g"


def browser(binary: str, tmp_path: Path) -> Chromium:
    page = Chromium(binary, tmp_path / "profile")  # a fresh profile each time
    for domain in ("Page", "Runtime", "Network", "Log"):
        page.page(f"{domain}.enable")
    return page


VISIBLE_CLASSES = "[...document.querySelectorAll('#cards .card')].filter(c => getComputedStyle(c).display !== 'none').map(c => c.dataset.class)"


def test_filter_to_one_class_in_chromium(chromium: str, gallery: Path, tmp_path: Path) -> None:
    data = index_of(gallery)
    wanted = "MRI|knee-acl_pathology"
    expected = sum(1 for c in data["images"] if f"{c['modality']}|{c['label']}" == wanted)
    with browser(chromium, tmp_path) as page:
        page.viewport(1366, 900)
        page.open((gallery / "index.html").as_uri())
        assert len(page.evaluate(VISIBLE_CLASSES)) == len(data["images"])
        assert page.evaluate("[...document.querySelectorAll('img')].every(i => i.alt.length > 10)")
        assert page.evaluate("[...document.querySelectorAll('select, input')].every(e => e.labels.length === 1)")
        page.evaluate(
            f"(() => {{ const s = document.getElementById('f-class'); s.value = {orjson.dumps(wanted).decode()};"
            " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )
        shown = page.evaluate(VISIBLE_CLASSES)
        assert shown == [wanted] * expected and expected >= 3  # train, val and test cards of that class
        assert page.evaluate("document.getElementById('count').textContent").startswith(f"Showing {expected} images")
        laptop = page.screenshot(tmp_path / "laptop.png")

        page.evaluate("document.querySelector('.card:not([hidden])').focus()")  # keyboard: next card, search
        page.key("ArrowRight", key_code=39)
        assert page.evaluate("document.activeElement.id") == page.evaluate(
            "[...document.querySelectorAll('.card:not([hidden])')][1].id"
        )
        page.key("/", code="Slash", key_code=191)
        assert page.evaluate("document.activeElement.id") == "f-search"

        page.viewport(390, 844, mobile=True)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
        phone = page.screenshot(tmp_path / "phone.png")

        assert page.evaluate("location.hash") == "#class=MRI%7Cknee-acl_pathology"  # a bookmarkable view
        page.open((gallery / "index.html").as_uri() + "?again#split=val&class=MRI%7Cknee-acl_pathology")  # a new load
        in_val = sum(1 for c in data["images"] if c["split"] == "val" and f"{c['modality']}|{c['label']}" == wanted)
        assert page.evaluate(VISIBLE_CLASSES) == [wanted] * in_val and in_val >= 1
        assert page.evaluate("document.getElementById('f-split').value") == "val"
    with Image.open(io.BytesIO(laptop)) as shot:
        assert shot.size == (1366, 900)
    with Image.open(io.BytesIO(phone)) as shot:
        assert shot.size == (390, 844)


@pytest.mark.parametrize("single_file", [False, True], ids=["folder", "single-file"])
def test_page_makes_no_network_request(
    chromium: str, gallery_with_charts: Path, sample_dataset: Path, tmp_path: Path, single_file: bool
) -> None:
    target = gallery_with_charts
    if single_file:
        target = tmp_path / "one"
        assert run("browse", gallery_with_charts.parent / "ds", "-o", target, "--per-class", 1, "--single-file", "-q").exit_code == 0
    with browser(chromium, tmp_path) as page:
        page.viewport(1280, 800)
        page.open((target / "index.html").as_uri())
        page.evaluate("document.getElementById('tab-strata').click()")  # the strata view and its chart
        assert page.evaluate("document.getElementById('view-strata').hidden") is False
        assert page.evaluate("document.querySelectorAll('#view-strata table').length") == 3
        # The chart decodes asynchronously (slowly on a loaded machine): wait for it, then check it drew.
        assert page.evaluate(
            "new Promise(done => { const img = document.querySelector('#view-strata .chart img');"
            " if (img.complete && img.naturalWidth) return done(true);"
            " img.addEventListener('load', () => done(img.naturalWidth > 0));"
            " img.addEventListener('error', () => done(false));"
            " setTimeout(() => done(img.complete && img.naturalWidth > 0), 10000); })"
        )
        page.screenshot(tmp_path / "strata.png", full_page=False)
        page.evaluate("document.getElementById('tab-cards').click()")
        page.evaluate(
            "(() => { const s = document.getElementById('f-search'); s.value = 'knee';"
            " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # lazy images load
        page.evaluate("new Promise(r => setTimeout(r, 300))")
        urls = [e["params"]["request"]["url"] for e in page.events if e["method"] == "Network.requestWillBeSent"]
        problems = [
            e["params"]["entry"]["text"]
            for e in page.events
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]
        exceptions = [e for e in page.events if e["method"] == "Runtime.exceptionThrown"]
    assert urls and all(url.startswith(("file://", "data:")) for url in urls), [
        u for u in urls if not u.startswith(("file://", "data:"))
    ]
    assert sum(url.startswith("file://") for url in urls) == (1 if single_file else len(urls))
    assert not problems and not exceptions
