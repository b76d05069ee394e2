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
from .distractors import DrawTable, Fit, exclusions, fit_sets, place_answer
from .taxonomy import Taxonomy
from .templates import Template, TemplateSet

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
_ANAT_NO, _PATH_NO, _AM_DRAW, _AM_POS, _PM_DRAW, _PM_POS, _COIN = range(len(_T), len(_T) + 7)
_SHUFFLE = len(_T) + 7  # 3 columns for anatomy, 3 for pathology
_WIDTH = _SHUFFLE + 2 * WRONG


@dataclass(frozen=True)
class Plan:
    """Everything ``render`` needs, precomputed for one split; picklable."""

    split: str
    variant: str
    # per class: modality, region, pathology (display), label, is_abnormal, region index, name index
    meta: list[tuple[str, str, str, str, bool, int, int]]
    region_of: np.ndarray
    name_of: np.ndarray  # index of the class's pathology in its region's name list
    # exchangeable set draws: anatomy rows per region, pathology rows per class (x variants)
    anat_mc: DrawTable
    anat_no: DrawTable
    path_mc: DrawTable
    path_no: DrawTable
    path_variants: int  # 2 when "no pathology seen" has a fixed rate (row 2c + offered), else 1
    normal_rate: float  # that fixed rate (unused when matched)
    exchange: dict[str, dict[str, float]]  # per question kind and region: exact text-only leak
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
    pool_size: dict[str, int]
    caption_size: np.ndarray  # [class]
    closed_size: np.ndarray  # [region, name]
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
    widest = max(len(r.pathologies) for r in regions)

    draws = fit_draws(taxonomy, config, class_counts)
    classes = taxonomy.classes
    region_of = np.array([region_index[c.region] for c in classes], dtype=np.int64)
    name_of = np.array([regions[region_index[c.region]].pathologies.index(c.pathology) for c in classes])

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
                display = taxonomy.name(r.key, n)
                texts = [
                    _render(t, region=r.name, pathology=display.name, pathology_phrase=display.phrase)
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
        meta=[
            (c.modality_name, c.region_name, c.pathology_name, c.label, c.is_abnormal, int(region_of[i]), int(name_of[i]))
            for i, c in enumerate(classes)
        ],
        region_of=region_of,
        name_of=name_of,
        anat_mc=draws.anat_mc,
        anat_no=draws.anat_no,
        path_mc=draws.path_mc,
        path_no=draws.path_no,
        path_variants=draws.variants,
        normal_rate=draws.rate,
        exchange=draws.exchange,
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
        pool_size={name: len(pool(name, kind)) for name in templates.pools},
        caption_size=np.array([len(c) for c in captions], dtype=np.int64),
        closed_size=np.array(
            [[len(texts) for texts in names] + [1] * (widest - len(names)) for names in closed], dtype=np.int64
        ),
        normal_of=[r.pathologies.index(taxonomy.normal_folder) for r in regions],
        widest=widest,
        seed=config.seed,
    )


@dataclass(frozen=True)
class Draws:
    """The four exchangeable draws of one split and their exact residual leaks."""

    anat_mc: DrawTable
    anat_no: DrawTable
    path_mc: DrawTable
    path_no: DrawTable
    variants: int
    rate: float
    exchange: dict[str, dict[str, float]]


def fit_draws(taxonomy: Taxonomy, config: Config, class_counts: np.ndarray) -> Draws:
    """Fit every exchangeable set distribution of a split from its class counts (SPEC section 3)."""
    regions = list(taxonomy.regions.values())
    per_region, per_name = region_counts(taxonomy, class_counts)
    region_texts = [r.name for r in regions]
    anat_mc = fit_sets(per_region, len(LETTERS), exclusions(region_texts, [], True))
    anat_no = fit_sets(per_region, 2, exclusions(region_texts, [], False))
    rate = -1.0 if config.no_pathology_option_rate == MATCHED else float(config.no_pathology_option_rate)
    variants = 1 if rate < 0 else 2
    exchange: dict[str, dict[str, float]] = {
        "anatomy_mc": {"all": anat_mc.leak},
        "anatomy_closed": {"all": anat_no.single_name_leak},
        "pathology_mc": {},
        "pathology_closed": {},
    }
    mc_rows: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    no_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for region, counts in zip(regions, per_name):
        names = region.pathologies
        normal = names.index(taxonomy.normal_folder)
        closed = fit_sets(counts, 2, taxonomy.exclusions(region.key, False))
        exchange["pathology_closed"][region.key] = closed.single_name_leak
        excluded = taxonomy.exclusions(region.key, True)
        if rate < 0:
            fits: list[Fit] = [fit_sets(counts, len(LETTERS), excluded)]
            exchange["pathology_mc"][region.key] = fits[0].leak
        else:
            abnormal = np.arange(len(names)) != normal
            # Sets shown with "no pathology seen": three abnormal names that may stand beside it.
            beside = abnormal & ~excluded[normal]
            fits = [fit_sets(counts, len(LETTERS), excluded, abnormal), fit_sets(counts, WRONG, excluded, beside)]
            exchange["pathology_mc"][region.key] = max(f.leak for f in fits)
        for c in taxonomy.classes:
            if c.region != region.key:
                continue
            t = names.index(c.pathology)
            no_rows[c.index] = closed.conditional(t)
            if rate < 0:
                mc_rows[c.index] = [fits[0].conditional(t)]
            elif t == normal:
                with_normal = (fits[1].q, fits[1].sets)
                mc_rows[c.index] = [with_normal, with_normal]
            else:
                probs, others = fits[1].conditional(t)
                mc_rows[c.index] = [fits[0].conditional(t), (probs, np.column_stack([others, np.full(len(others), normal)]))]
    classes = range(len(taxonomy.classes))
    return Draws(
        anat_mc=DrawTable.build([anat_mc.conditional(r) for r in range(len(regions))], len(LETTERS)),
        anat_no=DrawTable.build([anat_no.conditional(r) for r in range(len(regions))], 2),
        path_mc=DrawTable.build([row for c in classes for row in mc_rows[c]], len(LETTERS)),
        path_no=DrawTable.build([no_rows[c] for c in classes], 2),
        variants=variants,
        rate=max(rate, 0.0),
        exchange=exchange,
    )


def _render(template: Template, **values: str) -> str:
    """Render with only the placeholders the template uses (templates may omit any)."""
    return template.render(**{k: v for k, v in values.items() if k in template.fields})


@dataclass(frozen=True)
class Slice:
    """Images to render: ids, paths relative to ROOT, class indices, keys; optional forced letters."""

    ids: Sequence[str]
    images: Sequence[str]
    classes: np.ndarray
    keys: np.ndarray
    anatomy_letter: np.ndarray | None = None
    pathology_letter: np.ndarray | None = None
    slot_of: np.ndarray | None = None  # per-slot benchmark: the one slot (index) each image is asked

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
            slot_of=None if self.slot_of is None else self.slot_of[start:stop],
        )


def draw_options(plan: Plan, block: Slice, u: np.ndarray) -> tuple[np.ndarray, ...]:
    """Vectorised choices for a block: closed "no" names, option rows and correct letters."""
    cls = block.classes
    region, own = plan.region_of[cls], plan.name_of[cls]
    anat_letter = _letters(u[:, _AM_POS], block.anatomy_letter)
    path_letter = _letters(u[:, _PM_POS], block.pathology_letter)
    variant = (u[:, _COIN] < plan.normal_rate).astype(np.int64) if plan.path_variants > 1 else 0
    anat_wrong = plan.anat_mc.draw(region, u[:, _AM_DRAW])
    path_wrong = plan.path_mc.draw(cls * plan.path_variants + variant, u[:, _PM_DRAW])
    anat_options = place_answer(region, anat_wrong, anat_letter, u[:, _SHUFFLE : _SHUFFLE + WRONG])
    path_options = place_answer(own, path_wrong, path_letter, u[:, _SHUFFLE + WRONG : _WIDTH])
    anat_no = plan.anat_no.draw(region, u[:, _ANAT_NO])[:, 0]
    path_no = plan.path_no.draw(cls, u[:, _PATH_NO])[:, 0]
    if (path_wrong < 0).any() or (anat_wrong < 0).any() or (path_no < 0).any() or (anat_no < 0).any():
        raise ValueError("an image's class has no valid option set (its region has too few names)")
    return anat_no, anat_options, anat_letter, path_no, path_options, path_letter


def _letters(uniform: np.ndarray, forced: np.ndarray | None) -> np.ndarray:
    if forced is not None:
        return np.asarray(forced, dtype=np.int64)
    return np.minimum((uniform * len(LETTERS)).astype(np.int64), len(LETTERS) - 1)


def _choose(uniform: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Template index per image: floor(u * pool size), elementwise."""
    return np.minimum((uniform * sizes).astype(np.int64), sizes - 1)


def render(plan: Plan, images: Slice, config_name: str) -> Iterator[bytes]:
    """JSONL lines (with newline) for ``images``: captions for 'alignment', else nine questions."""
    for start in range(0, len(images), BLOCK):
        block = images.part(start, start + BLOCK)
        keys = streams.image_keys(block.keys, plan.seed)
        if config_name == "alignment":
            yield from _captions(plan, block, streams.uniforms(keys, 2))
        else:
            u = streams.uniforms(keys, _WIDTH)
            lines = _questions(plan, block, u)
            if block.slot_of is None:
                yield from lines
                continue
            for keep in block.slot_of.tolist():
                yield [next(lines) for _ in INSTRUCT_SLOTS][keep]


def _captions(plan: Plan, block: Slice, u: np.ndarray) -> Iterator[bytes]:
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    prompts, prompt_ids, split = plan.prompt, plan.template_ids["prompt"], plan.split
    cls = block.classes
    prompt_pick = _choose(u[:, _T["prompt"]], np.full(len(cls), len(prompts))).tolist()
    caption_pick = _choose(u[:, _T["caption"]], plan.caption_size[cls]).tolist()
    for image, c, key, p, t in zip(block.images, cls.tolist(), block.keys.tolist(), prompt_pick, caption_pick):
        modality, region, pathology, label, abnormal, _, _ = plan.meta[c]
        caption = plan.caption[c][t]
        pool = "caption_abnormal" if abnormal else "caption_normal"
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
                "answer": caption,
                "answer_text": caption,
                "modality": modality,
                "region": region,
                "pathology": pathology,
                "label": label,
                "is_abnormal": abnormal,
                "template_id": f"{prompt_ids[p]}+{plan.template_ids[pool][t]}",
            },
            option=opt,
        )


def _questions(plan: Plan, block: Slice, u: np.ndarray) -> Iterator[bytes]:
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    split, ids, meta = plan.split, plan.template_ids, plan.meta
    anat_no, anat_opts, anat_letter, path_no, path_opts, path_letter = draw_options(plan, block, u)
    cls = block.classes
    region_of, name_of = plan.region_of[cls], plan.name_of[cls]
    size = plan.pool_size
    picks = np.stack(
        [
            _choose(u[:, _T["anatomy_open"]], np.full(len(cls), size["anatomy_open"])),
            _choose(u[:, _T["anatomy_closed_yes"]], np.full(len(cls), size["anatomy_closed"])),
            _choose(u[:, _T["anatomy_closed_no"]], np.full(len(cls), size["anatomy_closed"])),
            _choose(u[:, _T["anatomy_mc"]], np.full(len(cls), size["anatomy_mc"])),
            _choose(u[:, _T["abnormality_closed"]], np.full(len(cls), size["abnormality_closed"])),
            _choose(u[:, _T["pathology_open"]], np.full(len(cls), size["pathology_open"])),
            _choose(u[:, _T["pathology_closed_yes"]], plan.closed_size[region_of, name_of]),
            _choose(u[:, _T["pathology_closed_no"]], plan.closed_size[region_of, path_no]),
            _choose(u[:, _T["pathology_mc"]], np.full(len(cls), size["pathology_mc"])),
        ],
        axis=1,
    ).tolist()
    region_text, option_text, normal_of = plan.region_text, plan.option_text, plan.normal_of
    closed_pool = ("pathology_closed", "pathology_closed_normal")

    def line(
        prefix: str, image: str, slot: str, question: str, choices: list[str], answer: str,
        answer_text: str, fields: tuple[str, str, str, str, bool, int, int], template: str,
    ) -> bytes:
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
                "modality": fields[0],
                "region": fields[1],
                "pathology": fields[2],
                "label": fields[3],
                "is_abnormal": fields[4],
                "template_id": template,
            },
            option=opt,
        )

    rows = zip(
        block.images, cls.tolist(), block.keys.tolist(), picks, anat_no.tolist(), anat_opts.tolist(),
        anat_letter.tolist(), path_no.tolist(), path_opts.tolist(), path_letter.tolist(),
    )
    for image, c, key, t, a_no, a_opts, a_letter, p_no, p_opts, p_letter in rows:
        fields = meta[c]
        region, abnormal, r, own = fields[1], fields[4], fields[5], fields[6]
        prefix = f"{key:016x}-"
        names = option_text[r]
        answer = names[own]
        yield line(prefix, image, "anatomy_open", plan.anatomy_open[t[0]], [], region, region, fields,
                   ids["anatomy_open"][t[0]])
        yield line(prefix, image, "anatomy_closed_yes", plan.anatomy_closed[t[1]][r], [], "yes", "yes", fields,
                   ids["anatomy_closed"][t[1]])
        yield line(prefix, image, "anatomy_closed_no", plan.anatomy_closed[t[2]][a_no], [], "no", "no", fields,
                   ids["anatomy_closed"][t[2]])
        lines = plan.choice_region
        question = "\n".join([plan.anatomy_mc[t[3]]] + [lines[o][i] for i, o in enumerate(a_opts)])
        yield line(prefix, image, "anatomy_mc", question, [region_text[o] for o in a_opts], LETTERS[a_letter],
                   region, fields, ids["anatomy_mc"][t[3]])
        yes_no = "yes" if abnormal else "no"
        yield line(prefix, image, "abnormality_closed", plan.abnormality[t[4]][r], [], yes_no, yes_no, fields,
                   ids["abnormality_closed"][t[4]])
        yield line(prefix, image, "pathology_open", plan.pathology_open[t[5]][r], [], answer, answer, fields,
                   ids["pathology_open"][t[5]])
        closed = plan.pathology_closed[r]
        yield line(prefix, image, "pathology_closed_yes", closed[own][t[6]], [], "yes", "yes", fields,
                   ids[closed_pool[own == normal_of[r]]][t[6]])
        yield line(prefix, image, "pathology_closed_no", closed[p_no][t[7]], [], "no", "no", fields,
                   ids[closed_pool[p_no == normal_of[r]]][t[7]])
        lines = plan.choice_path[r]
        question = "\n".join([plan.pathology_mc[t[8]][r]] + [lines[o][i] for i, o in enumerate(p_opts)])
        yield line(prefix, image, "pathology_mc", question, [names[o] for o in p_opts], LETTERS[p_letter],
                   answer, fields, ids["pathology_mc"][t[8]])
