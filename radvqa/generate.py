"""Records for a slice of the image table: one caption and nine questions per image.

``build_plan`` does all the per-class work once (fitted distractor probabilities, every
template pre-rendered for every region and name); ``render`` is then a pure function from a
slice of images (paths, class indices, keys) to JSONL lines, with no global state, so a
process pool or a distributed engine can map it over slices. All randomness comes from
per-image streams (:mod:`radvqa.streams`), so output does not depend on how images are sliced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from . import streams
from .config import MATCHED, Config
from .distractors import fit_inclusion, inverse_cdf_draw, place_answer, systematic_draw
from .taxonomy import Taxonomy
from .templates import TemplateSet

LETTERS = ("A", "B", "C", "D")
WRONG = len(LETTERS) - 1
INSTRUCT_SLOTS = (
    "anatomy_open",
    "anatomy_closed_yes",
    "anatomy_closed_no",
    "anatomy_mc",
    "abnormality_closed",
    "pathology_open",
    "pathology_closed_yes",
    "pathology_closed_no",
    "pathology_mc",
)
SLOT_TASK = {slot: slot.split("_", 1)[0] for slot in INSTRUCT_SLOTS} | {"caption": "alignment"}
SLOT_TYPE = {
    slot: ("multiple_choice" if slot.endswith("_mc") else "closed" if "_closed" in slot else "open")
    for slot in INSTRUCT_SLOTS
} | {"caption": "caption"}
BLOCK = 1024
# Columns of each image's uniform stream (template choices first, then draws).
_T = {name: i for i, name in enumerate(("prompt", "caption") + INSTRUCT_SLOTS)}
_ANAT_NO, _PATH_NO, _AM_START, _AM_POS, _PM_START, _PM_POS = range(len(_T), len(_T) + 6)
_SHUFFLE = len(_T) + 6  # 3 columns for anatomy, 3 for pathology
_ORDER = _SHUFFLE + 2 * WRONG


@dataclass(frozen=True)
class Plan:
    """Everything ``render`` needs, precomputed for one split; picklable."""

    split: str
    variant: str
    # per class
    base: list[dict[str, object]]
    region_of: np.ndarray
    name_of: np.ndarray  # index of the class's pathology in its region's name list
    is_abnormal: np.ndarray
    # fitted draw rows per class (padded to the widest region)
    anat_mc: np.ndarray
    anat_no: np.ndarray
    path_mc: np.ndarray
    path_no: np.ndarray
    # pre-rendered text
    prompt: list[str]
    caption: list[list[str]]  # [class][template]
    anatomy_open: list[str]
    anatomy_closed: list[list[str]]  # [template][region]
    anatomy_mc: list[str]
    abnormality: list[list[str]]  # [template][region]
    pathology_open: list[list[str]]
    pathology_closed: list[list[list[str]]]  # [region][name][template]
    pathology_mc: list[list[str]]
    region_text: list[str]
    option_text: list[list[str]]  # [region][name] answer text
    choice_region: list[list[str]]  # [region][letter] option line
    choice_path: list[list[list[str]]]  # [region][name][letter]
    template_ids: dict[str, list[str]]
    normal_of: list[int]  # [region] index of the normal name
    widest: int
    seed: int


def region_counts(taxonomy: Taxonomy, class_counts: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image counts per region, and per region per pathology name (sorted names)."""
    regions = list(taxonomy.regions)
    per_region = np.zeros(len(regions))
    per_name = [np.zeros(len(taxonomy.regions[r].pathologies)) for r in regions]
    for cls, count in zip(taxonomy.classes, class_counts):
        r = regions.index(cls.region)
        per_region[r] += count
        per_name[r][taxonomy.regions[cls.region].pathologies.index(cls.pathology)] += count
    return per_region, per_name


def build_plan(
    taxonomy: Taxonomy,
    templates: TemplateSet,
    config: Config,
    split: str,
    class_counts: np.ndarray,
    variant: str = "train",
) -> Plan:
    """Fit distractors to this split's class counts and pre-render every template."""
    regions = list(taxonomy.regions.values())
    region_index = {r.key: i for i, r in enumerate(regions)}
    per_region, per_name = region_counts(taxonomy, class_counts)
    widest = max(len(r.pathologies) for r in regions)

    not_self = ~np.eye(len(regions), dtype=bool)
    anat_mc_fit = fit_inclusion(per_region, not_self, WRONG)
    anat_no_fit = fit_inclusion(per_region, not_self, 1)
    path_mc_fit, path_no_fit = [], []
    for region, counts in zip(regions, per_name):
        names = region.pathologies
        eligible = ~np.eye(len(names), dtype=bool)
        for t, name in enumerate(names):
            for other in region.conflicts_of(name):
                eligible[t, names.index(other)] = False
        fixed = None
        if config.no_pathology_option_rate != MATCHED:
            fixed = {names.index(taxonomy.normal_folder): float(config.no_pathology_option_rate)}
        path_mc_fit.append(fit_inclusion(counts, eligible, WRONG, fixed))
        path_no_fit.append(fit_inclusion(counts, eligible, 1))

    classes = taxonomy.classes
    region_of = np.array([region_index[c.region] for c in classes], dtype=np.int64)
    name_of = np.array([regions[region_index[c.region]].pathologies.index(c.pathology) for c in classes])

    def padded(fits: list[np.ndarray]) -> np.ndarray:
        rows = np.zeros((len(classes), widest))
        for i, c in enumerate(classes):
            row = fits[region_of[i]][name_of[i]]
            rows[i, : len(row)] = row
        return rows

    pool = templates.pool
    kind = variant
    option_text = [[taxonomy.answer_text(r.key, n) for n in r.pathologies] for r in regions]
    line = templates.choice_line
    closed = []
    for r in regions:
        names_closed = []
        for n in r.pathologies:
            if n == taxonomy.normal_folder:
                texts = [t.render(region=r.name) for t in pool("pathology_closed_normal", kind)]
            else:
                name = taxonomy.name(r.key, n)
                texts = [
                    _render(t, region=r.name, pathology=name.name, pathology_phrase=name.phrase)
                    for t in pool("pathology_closed", kind)
                ]
            names_closed.append(texts)
        closed.append(names_closed)
    captions = []
    for c in classes:
        source = "caption_abnormal" if c.is_abnormal else "caption_normal"
        captions.append(
            [
                _render(
                    t,
                    modality=c.modality_name,
                    region=c.region_name,
                    pathology=c.pathology_name,
                    pathology_phrase=c.pathology_phrase,
                )
                for t in pool(source, kind)
            ]
        )
    ids = {name: [t.id for t in pool(name, kind)] for name in templates.pools}
    return Plan(
        split=split,
        variant=variant,
        base=[
            {
                "modality": c.modality_name,
                "region": c.region_name,
                "pathology": c.pathology_name,
                "label": c.label,
                "is_abnormal": c.is_abnormal,
            }
            for c in classes
        ],
        region_of=region_of,
        name_of=name_of,
        is_abnormal=np.array([c.is_abnormal for c in classes]),
        anat_mc=np.stack([anat_mc_fit[r] for r in region_of]),
        anat_no=np.stack([anat_no_fit[r] for r in region_of]),
        path_mc=padded(path_mc_fit),
        path_no=padded(path_no_fit),
        prompt=[t.text for t in pool("prompt", kind)],
        caption=captions,
        anatomy_open=[t.text for t in pool("anatomy_open", kind)],
        anatomy_closed=[[t.render(region=r.name) for r in regions] for t in pool("anatomy_closed", kind)],
        anatomy_mc=[t.text for t in pool("anatomy_mc", kind)],
        abnormality=[[_render(t, region=r.name) for r in regions] for t in pool("abnormality_closed", kind)],
        pathology_open=[[_render(t, region=r.name) for r in regions] for t in pool("pathology_open", kind)],
        pathology_closed=closed,
        pathology_mc=[[_render(t, region=r.name) for r in regions] for t in pool("pathology_mc", kind)],
        region_text=[r.name for r in regions],
        option_text=option_text,
        choice_region=[[line.format(letter=L, option=r.name) for L in LETTERS] for r in regions],
        choice_path=[[[line.format(letter=L, option=o) for L in LETTERS] for o in names] for names in option_text],
        template_ids=ids,
        normal_of=[r.pathologies.index(taxonomy.normal_folder) for r in regions],
        widest=widest,
        seed=config.seed,
    )


def _render(template: object, **values: str) -> str:
    """Render with only the placeholders the template uses (templates may omit any)."""
    fields = template.fields  # type: ignore[attr-defined]
    return template.text.format(**{k: v for k, v in values.items() if k in fields})  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Slice:
    """Images to render: ids, paths relative to ROOT, class indices, keys; optional forced letters."""

    ids: Sequence[str]
    images: Sequence[str]
    classes: np.ndarray
    keys: np.ndarray
    anatomy_letter: np.ndarray | None = None
    pathology_letter: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def part(self, start: int, stop: int) -> Slice:
        """Images start..stop of this slice."""
        return Slice(
            ids=self.ids[start:stop],
            images=self.images[start:stop],
            classes=self.classes[start:stop],
            keys=self.keys[start:stop],
            anatomy_letter=None if self.anatomy_letter is None else self.anatomy_letter[start:stop],
            pathology_letter=None if self.pathology_letter is None else self.pathology_letter[start:stop],
        )


@dataclass(frozen=True)
class Draws:
    """Vectorised random choices for a block of images."""

    pick: np.ndarray  # (n, templates) uniforms for template choice
    anat_no: np.ndarray
    anat_options: np.ndarray  # (n, 4) region indices
    anat_letter: np.ndarray
    path_no: np.ndarray
    path_options: np.ndarray  # (n, 4) name indices in the image's region
    path_letter: np.ndarray


def draw(plan: Plan, block: Slice) -> Draws:
    """All random choices for a block, from each image's own stream."""
    n_regions = plan.anat_mc.shape[1]
    u = streams.uniforms(streams.image_keys(block.keys, plan.seed), _ORDER + n_regions + plan.widest)
    cls = block.classes
    region = plan.region_of[cls]
    name = plan.name_of[cls]
    anat_letter = _letters(u[:, _AM_POS], block.anatomy_letter)
    path_letter = _letters(u[:, _PM_POS], block.pathology_letter)
    anat_wrong = systematic_draw(plan.anat_mc[cls], u[:, _ORDER : _ORDER + n_regions], u[:, _AM_START], WRONG)
    path_wrong = systematic_draw(plan.path_mc[cls], u[:, _ORDER + n_regions :], u[:, _PM_START], WRONG)
    return Draws(
        pick=u[:, : len(_T)],
        anat_no=inverse_cdf_draw(plan.anat_no[cls], u[:, _ANAT_NO]),
        anat_options=place_answer(region, anat_wrong, anat_letter, u[:, _SHUFFLE : _SHUFFLE + WRONG]),
        anat_letter=anat_letter,
        path_no=inverse_cdf_draw(plan.path_no[cls], u[:, _PATH_NO]),
        path_options=place_answer(name, path_wrong, path_letter, u[:, _SHUFFLE + WRONG : _ORDER]),
        path_letter=path_letter,
    )


def _letters(uniform: np.ndarray, forced: np.ndarray | None) -> np.ndarray:
    if forced is not None:
        return np.asarray(forced, dtype=np.int64)
    return np.minimum((uniform * len(LETTERS)).astype(np.int64), len(LETTERS) - 1)


def render(plan: Plan, images: Slice, config_name: str) -> Iterator[bytes]:
    """JSONL lines (with newline) for ``images``: captions for 'alignment', else nine questions."""
    for start in range(0, len(images), BLOCK):
        block = images.part(start, start + BLOCK)
        draws = draw(plan, block)
        if config_name == "alignment":
            yield from _captions(plan, block, draws)
        else:
            yield from _questions(plan, block, draws)


def _index(u: float, n: int) -> int:
    i = int(u * n)
    return i if i < n else n - 1


def _captions(plan: Plan, block: Slice, draws: Draws) -> Iterator[bytes]:
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    prompts, ids = plan.prompt, plan.template_ids
    split = plan.split
    picks = draws.pick.tolist()
    for image_id, image, cls, key, pick in zip(block.ids, block.images, block.classes.tolist(), block.keys.tolist(), picks):
        p = _index(pick[_T["prompt"]], len(prompts))
        captions = plan.caption[cls]
        c = _index(pick[_T["caption"]], len(captions))
        base = plan.base[cls]
        source = "caption_abnormal" if base["is_abnormal"] else "caption_normal"
        yield dumps(
            {
                "id": f"{key:016x}-caption",
                "image": image,
                "split": split,
                "task": "alignment",
                "slot": "caption",
                "question_type": "caption",
                "question": prompts[p],
                "choices": [],
                "answer": captions[c],
                "answer_text": captions[c],
                **base,
                "template_id": f"{ids['prompt'][p]}+{ids[source][c]}",
            },
            option=opt,
        )


def _questions(plan: Plan, block: Slice, draws: Draws) -> Iterator[bytes]:
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    ids = plan.template_ids
    split = plan.split
    rows = zip(
        block.images,
        block.classes.tolist(),
        block.keys.tolist(),
        draws.pick.tolist(),
        draws.anat_no.tolist(),
        draws.anat_options.tolist(),
        draws.anat_letter.tolist(),
        draws.path_no.tolist(),
        draws.path_options.tolist(),
        draws.path_letter.tolist(),
    )
    region_text, option_text = plan.region_text, plan.option_text
    for image, cls, key, pick, anat_no, anat_opts, anat_letter, path_no, path_opts, path_letter in rows:
        base = plan.base[cls]
        r = int(plan.region_of[cls])
        own = int(plan.name_of[cls])
        prefix = f"{key:016x}-"
        region = region_text[r]
        names = option_text[r]

        def record(slot: str, question: str, choices: list[str], answer: str, answer_text: str, template: str) -> bytes:
            return dumps(
                {
                    "id": prefix + slot,
                    "image": image,
                    "split": split,
                    "task": SLOT_TASK[slot],
                    "slot": slot,
                    "question_type": SLOT_TYPE[slot],
                    "question": question,
                    "choices": choices,
                    "answer": answer,
                    "answer_text": answer_text,
                    **base,
                    "template_id": template,
                },
                option=opt,
            )

        t = _index(pick[_T["anatomy_open"]], len(plan.anatomy_open))
        yield record("anatomy_open", plan.anatomy_open[t], [], region, region, ids["anatomy_open"][t])
        n_ac = len(plan.anatomy_closed)
        t = _index(pick[_T["anatomy_closed_yes"]], n_ac)
        yield record("anatomy_closed_yes", plan.anatomy_closed[t][r], [], "yes", "yes", ids["anatomy_closed"][t])
        t = _index(pick[_T["anatomy_closed_no"]], n_ac)
        yield record("anatomy_closed_no", plan.anatomy_closed[t][anat_no], [], "no", "no", ids["anatomy_closed"][t])
        t = _index(pick[_T["anatomy_mc"]], len(plan.anatomy_mc))
        choices = [region_text[o] for o in anat_opts]
        question = "\n".join([plan.anatomy_mc[t]] + [plan.choice_region[o][i] for i, o in enumerate(anat_opts)])
        yield record("anatomy_mc", question, choices, LETTERS[anat_letter], region, ids["anatomy_mc"][t])
        t = _index(pick[_T["abnormality_closed"]], len(plan.abnormality))
        abnormal = "yes" if base["is_abnormal"] else "no"
        yield record("abnormality_closed", plan.abnormality[t][r], [], abnormal, abnormal, ids["abnormality_closed"][t])
        t = _index(pick[_T["pathology_open"]], len(plan.pathology_open))
        yield record("pathology_open", plan.pathology_open[t][r], [], names[own], names[own], ids["pathology_open"][t])
        for slot, name, answer in (("pathology_closed_yes", own, "yes"), ("pathology_closed_no", path_no, "no")):
            texts = plan.pathology_closed[r][name]
            t = _index(pick[_T[slot]], len(texts))
            pool = "pathology_closed_normal" if name == plan.normal_of[r] else "pathology_closed"
            yield record(slot, texts[t], [], answer, answer, ids[pool][t])
        t = _index(pick[_T["pathology_mc"]], len(plan.pathology_mc))
        choices = [names[o] for o in path_opts]
        choice_lines = plan.choice_path[r]
        question = "\n".join([plan.pathology_mc[t][r]] + [choice_lines[o][i] for i, o in enumerate(path_opts)])
        yield record("pathology_mc", question, choices, LETTERS[path_letter], names[own], ids["pathology_mc"][t])

