"""Run each real client's own loading code on radvqa's exports and print a table.

    python scripts/check_clients.py [--work /tmp/radvqa-clients] [--only NAME ...]

Builds the sample dataset with this checkout's radvqa, exports every format, then for each client
builds a scratch virtual environment under WORK/venvs (reused on the next run), installs the
client from the package index and runs its own loader on the export:

* Hugging Face ``datasets`` 3, 4 and 5: ``load_dataset`` of every hf-parquet config from another
  working folder (embedded images and ``--no-embed`` absolute paths), images decoded, and single
  parquet files loaded without the card;
* LLaMA-Factory 0.9.5: ``get_dataset_list`` over the export's ``dataset_info.json`` and
  ``_load_single_dataset`` (its sharegpt converter, which resolves ``images`` against
  ``media_dir``), absolute and ``--relative`` exports; every image then opened;
* LLaVA (``llava-torch`` 1.2.2.post1, the PyPI build of haotian-liu/LLaVA): ``LazySupervisedDataset``
  with real tokenisation and CLIP image processing on the llava export, and ``model_vqa.eval_model``
  on the llava-eval questions; its answers file is then scored by ``radvqa evaluate``;
* VLMEvalKit (not on PyPI: installed from its source, ``VLMEVALKIT_SRC``): ``build_dataset`` on
  both TSVs (``CustomMCQDataset`` / ``CustomVQADataset``), ``build_prompt`` for every row, an
  inference-shaped prediction file scored by its own exact-matching ``evaluate`` and by
  ``radvqa evaluate``;
* lmms-eval 0.7.3: ``TaskManager(include_path=...)`` on the lmms-eval task folder,
  ``simple_evaluate`` with ``log_samples``; the samples log is scored by ``radvqa evaluate``.

Only model code is stubbed: a fixed tokenizer built locally instead of a downloaded one and an
"oracle" model that answers each question with its reference (so a correct pipeline scores 100);
LLaVA's ``.cuda()`` calls are made no-ops on this CPU machine; VLMEvalKit's model registries
(``vlmeval.config``, ``vlmeval.api``, ``vlmeval.vlm``) are empty modules. torch comes from the
local CPU build (``torch==2.13.0``), or 2.14.1 with torchvision 0.29.1 for clients that import
torchvision (also on local disk), or 2.9.1 with torchaudio 2.9.1 for LLaMA-Factory, whose data
module imports torchaudio (no torchaudio build loads beside a newer torch; this pair is a
multi-GB download from PyPI on the first run). Nothing is downloaded at run time besides the pip installs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TORCH_CPU = ["torch==2.13.0"]  # the local CPU wheel (see the machine notes); no CUDA download
TORCH_VISION = ["torch==2.14.1", "torchvision==0.29.1"]  # torchvision needs this pair, also local
TORCH_AUDIO = ["torch==2.9.1", "torchaudio==2.9.1"]  # the newest pair torchaudio builds exist for (downloaded)

# Each client: pip install steps (lists of arguments) and the probe that runs its loader.
CLIENTS: dict[str, list[list[str]]] = {
    "datasets 3": [["datasets>=3,<4", "pillow"]],
    "datasets 4": [["datasets>=4,<5", "pillow"]],
    "datasets 5": [["datasets>=5", "pillow"]],
    "LLaMA-Factory 0.9.5": [
        TORCH_AUDIO,
        ["--no-deps", "llamafactory==0.9.5"],
        # its requirements less the rest of the torch stack (torchvision/torchdata) and the web UI /
        # hub extras that the data loader does not import
        [
            "accelerate>=1.3.0,<=1.11.0",
            "datasets>=2.16.0,<=4.0.0",
            "peft>=0.18.0,<=0.18.1",
            "transformers>=4.55.0,<=5.6.0,!=4.57.0",
            "trl>=0.18.0,<=0.24.0",
            "tyro<0.9.0",
            "einops",
            "fire",
            "omegaconf",
            "pandas",
            "protobuf",
            "pydantic",
            "pyyaml",
            "safetensors",
            "scipy",
            "sentencepiece",
            "tiktoken",
            "matplotlib>=3.7.0",
            "pillow",
        ],
    ],
    "LLaVA 1.2.2": [
        TORCH_CPU,
        ["--no-deps", "llava-torch==1.2.2.post1"],
        # the wheel's pins less torch/torchvision, the demo UI, peft/timm and bitsandbytes
        [
            "transformers==4.36.2",
            "tokenizers==0.15.0",
            "sentencepiece==0.1.99",
            "shortuuid",
            "accelerate==0.21.0",
            "einops==0.6.1",
            "numpy<2",
            "pillow",
        ],
    ],
    "VLMEvalKit": [
        TORCH_VISION,
        ["--no-deps", "-e", "{VLMEVALKIT_SRC}"],
        # what `import vlmeval.dataset` needs from its requirements.txt (the rest serve models and judges)
        [
            "pandas",
            "numpy",
            "pillow",
            "requests",
            "openpyxl",
            "xlsxwriter",
            "tabulate",
            "termcolor",
            "validators",
            "portalocker",
            "python-dotenv",
            "tqdm",
            "huggingface_hub",
            "datasets",
            "rich",
            "sty",
            "json_repair",
            "timeout-decorator",
            "levenshtein",
            "joblib",
            "decord",
            "jieba",
            "nltk",
            "rouge",
            "rouge_score",
            "math-verify",
            "pylatexenc",
            "opencv-python-headless",
            "sympy",
            "scipy",
            "matplotlib",
            "imageio",
            "openai",
            "num2words",
            "scikit-learn",
        ],
    ],
    # 0.7.3 patches filelock._api, which filelock 4 no longer has
    "lmms-eval 0.7.3": [TORCH_VISION, ["lmms-eval==0.7.3"], ["filelock<4"]],
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, log: Path | None = None) -> str:
    """Run a command; on failure show the end of its output and raise."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(command)}\n{output}\n")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exit {result.returncode}:\n{output[-3000:]}")
    return result.stdout


# ---------------------------------------------------------------- the exports


def radvqa(*args: object, log: Path) -> None:
    run([sys.executable, "-c", "from radvqa.cli import app; app()", *map(str, args)], log=log)


def make_exports(work: Path, keep: bool = False) -> dict[str, Path]:
    """The sample copy, a dataset and every export of it (absolute paths, embedded images by default)."""
    data = work / "data"
    log = work / "radvqa.log"
    copy, out = data / "copy", data / "dataset"
    exports = {
        "hf-parquet": ["-f", "hf-parquet"],
        "hf-parquet-no-embed": ["-f", "hf-parquet", "--no-embed"],
        "llava": ["-f", "llava"],
        "llava-relative": ["-f", "llava", "--relative"],
        "sharegpt": ["-f", "sharegpt"],
        "sharegpt-relative": ["-f", "sharegpt", "--relative"],
        "llava-eval": ["-f", "llava-eval"],
        "vlmevalkit": ["-f", "vlmevalkit"],
        "lmms-eval": ["-f", "lmms-eval"],
    }
    paths = {"copy": copy, "dataset": out} | {name: data / name for name in exports}
    if keep and (data / ".done").is_file():
        return paths
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    radvqa("make-sample", copy, "--images-per-class", "2", log=log)
    radvqa("generate", copy, "-o", out, "--quiet", log=log)
    for name, args in exports.items():
        radvqa("export", out, *args, "-o", paths[name], "--quiet", log=log)
    (data / ".done").write_text("")
    return paths


# ---------------------------------------------------------------- virtual environments


def venv(work: Path, name: str, steps: list[list[str]], vlmevalkit: Path | None) -> Path:
    """A scratch venv for one client; rebuilt only when its install steps change."""
    folder = work / "venvs" / name.replace(" ", "-").lower()
    python = folder / "bin" / "python"
    steps = [[a.replace("{VLMEVALKIT_SRC}", str(vlmevalkit)) for a in step] for step in steps]
    digest = hashlib.sha256(json.dumps(steps).encode()).hexdigest()
    marker = folder / ".radvqa-ready"
    if marker.is_file() and marker.read_text() == digest:
        return python
    if folder.exists():
        shutil.rmtree(folder)
    say(f"  building {folder} ...")
    run([sys.executable, "-m", "venv", str(folder)])
    log = folder / "install.log"
    run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], log=log)
    for step in steps:
        run([str(python), "-m", "pip", "install", "-q", *step], log=log)
    marker.write_text(digest)
    return python


def probe(python: Path, code: str, paths: dict[str, Path], cwd: Path) -> list[dict[str, object]]:
    """Run a probe in a client's venv from an unrelated folder; it prints one JSON row per check."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(cwd / "hf-home"),
        "PATHS": json.dumps({k: str(v) for k, v in paths.items()}),
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
    }
    script = cwd / "probe.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    result = subprocess.run([str(python), str(script)], cwd=cwd, env=env, capture_output=True, text=True)
    (cwd / "probe.log").write_text(result.stdout + result.stderr)
    rows = [json.loads(line[len("ROW ") :]) for line in result.stdout.splitlines() if line.startswith("ROW ")]
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        rows.append({"format": "(probe)", "ok": False, "detail": f"crashed: {tail[:160]}"})
    return rows


PRELUDE = '''
import json, os, sys, traceback
PATHS = json.loads(os.environ["PATHS"])

def row(fmt, ok, detail):
    print("ROW " + json.dumps({"format": fmt, "ok": bool(ok), "detail": str(detail)}), flush=True)

def check(fmt):
    """Decorator: run a check, report its detail string or the exception that broke it."""
    def wrap(fn):
        try:
            row(fmt, True, fn())
        except Exception as exc:
            traceback.print_exc()
            row(fmt, False, f"{type(exc).__name__}: {exc}"[:200])
        return fn
    return wrap

def jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]
'''

# ---------------------------------------------------------------- probes

DATASETS_PROBE = '''
import glob, shutil
import datasets
from PIL import Image

def load_all(folder):
    rows = 0
    for config in ("alignment", "instruct", "benchmark"):
        for split, table in datasets.load_dataset(folder, config).items():
            assert isinstance(table.features["image"], datasets.Image), table.features["image"]
            for i in (0, table.num_rows - 1):
                image = table[i]["image"]
                assert isinstance(image, Image.Image) and image.size[0] > 0
            rows += table.num_rows
    return rows

@check("hf-parquet")
def _():
    return f"load_dataset: 3 configs, {load_all(PATHS['hf-parquet']):,} rows, images decode (datasets {datasets.__version__})"

@check("hf-parquet --no-embed")
def _():
    return f"absolute paths decode from another folder: {load_all(PATHS['hf-parquet-no-embed']):,} rows"

@check("hf-parquet, one file")
def _():
    shutil.copy(sorted(glob.glob(PATHS["hf-parquet"] + "/benchmark/test-*.parquet"))[0], "alone.parquet")
    table = datasets.load_dataset("parquet", data_files="alone.parquet", split="train")
    assert isinstance(table.features["image"], datasets.Image), table.features
    assert isinstance(table[0]["image"], Image.Image)
    kinds = {t: c for t, c in zip(table["question_type"], table["choices"])}
    assert kinds["open"] is None and kinds["closed"] is None and len(kinds["multiple_choice"]) == 4
    return "no card: Image decoded, choices null off multiple choice"
'''

LLAMAFACTORY_PROBE = '''
import yaml
from PIL import Image
from transformers import Seq2SeqTrainingArguments
from llamafactory.data.loader import _load_single_dataset
from llamafactory.data.parser import get_dataset_list
from llamafactory.hparams import DataArguments, ModelArguments
import llamafactory

def load(folder, **data_args):
    info = json.load(open(os.path.join(folder, "dataset_info.json")))
    args = DataArguments(dataset_dir=folder, **data_args)
    model = ModelArguments(model_name_or_path="stub-model")
    training = Seq2SeqTrainingArguments(output_dir="lf-out", report_to="none")
    rows = 0
    for attr in get_dataset_list(sorted(info), folder):
        table = _load_single_dataset(attr, model, args, training)
        for item in table:
            for path in item["_images"]:
                assert os.path.isabs(path) and os.path.isfile(path), path
        with Image.open(table[0]["_images"][0]) as image:
            image.load()
        rows += len(table)
    return rows

@check("sharegpt")
def _():
    rows = load(PATHS["sharegpt"])
    return f"dataset_info + sharegpt converter: {rows:,} rows, every image found (llamafactory {llamafactory.__version__})"

@check("sharegpt --relative")
def _():
    folder = PATHS["sharegpt-relative"]
    args = yaml.safe_load(open(os.path.join(folder, "llamafactory_data.yaml")))
    rows = load(folder, media_dir=args["media_dir"])
    return f"media_dir from llamafactory_data.yaml: {rows:,} rows, every image found"
'''

LLAVA_PROBE = '''
import types
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

torch.Tensor.cuda = lambda self, *a, **k: self  # a CPU machine: LLaVA moves tensors to the GPU itself

def tokenizer():
    """A real (word-level) fast tokenizer built from the export's text: no hub download."""
    words = {"<unk>": 0, "<s>": 1, "</s>": 2}
    texts = []
    for item in json.load(open(PATHS["llava"] + "/benchmark_test.json")):
        texts += [turn["value"] for turn in item["conversations"]]
    texts += ["A chat between a curious user and an artificial intelligence assistant. USER: ASSISTANT: <image>"]
    for text in texts:
        for word in text.replace("\\n", " ").split():
            words.setdefault(word, len(words))
    core = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>",
        model_max_length=2048,
    )

TOKENIZER = tokenizer()
TOKENIZER.legacy = True  # LLaVA's preprocess_v1 reads the Llama tokenizer's flag
PROCESSOR = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})

def supervised(name, image_folder):
    from llava import conversation
    from llava.train.train import DataArguments, LazySupervisedDataset
    conversation.default_conversation = conversation.conv_templates["vicuna_v1"]
    args = DataArguments(data_path=None, lazy_preprocess=True, is_multimodal=True, image_folder=image_folder,
                         image_aspect_ratio="pad")
    args.image_processor = PROCESSOR
    args.mm_use_im_start_end = False
    total = 0
    for split in ("alignment_train", "instruct_train", "benchmark_test"):
        data = LazySupervisedDataset(f"{PATHS[name]}/{split}.json", TOKENIZER, args)
        for i in range(len(data)):
            item = data[i]
            assert tuple(item["image"].shape) == (3, 336, 336) and item["input_ids"].numel() > 0
        total += len(data)
    return total

@check("llava")
def _():
    return f"LazySupervisedDataset: {supervised('llava', '/nonexistent'):,} items tokenised, images processed"

@check("llava --relative")
def _():
    return f"with --image_folder COPY: {supervised('llava-relative', PATHS['copy']):,} items"

@check("llava-eval")
def _():
    import llava.eval.model_vqa as model_vqa

    class OracleModel:
        """Stub model: answers every question with the first option letter's token (A)."""
        config = types.SimpleNamespace(mm_use_im_start_end=False)
        def generate(self, input_ids, **kwargs):
            return torch.tensor([[TOKENIZER.convert_tokens_to_ids("A")]])

    model_vqa.load_pretrained_model = lambda *a, **k: (TOKENIZER, OracleModel(), PROCESSOR, 2048)
    answers = os.path.abspath("llava-answers.jsonl")
    args = types.SimpleNamespace(
        model_path="stub", model_base=None, image_folder="/nonexistent",
        question_file=PATHS["llava-eval"] + "/radvqa_questions.jsonl", answers_file=answers,
        conv_mode="vicuna_v1", num_chunks=1, chunk_idx=0, temperature=0.0, top_p=None, num_beams=1,
    )
    model_vqa.eval_model(args)
    lines = jsonl(answers)
    return f"model_vqa.eval_model: {len(lines):,} questions, images opened, answers file written"
'''

VLMEVALKIT_PROBE = '''
import types

def stub(name):
    module = types.ModuleType(name)
    def missing(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return {} if not attr[:1].isupper() else type(attr, (), {})
    module.__getattr__ = missing
    module.__path__ = []
    module.__file__ = __file__
    sys.modules[name] = module

for name in ("vlmeval.config", "vlmeval.api", "vlmeval.vlm"):  # model registries only
    stub(name)
os.environ["LMUData"] = PATHS["vlmevalkit"]
from vlmeval.dataset import build_dataset
from vlmeval.smp import dump, load

def prompts(dataset):
    images = 0
    for i in range(len(dataset.data)):
        message = dataset.build_prompt(dataset.data.iloc[i])
        for part in message:
            if part["type"] == "image":
                assert os.path.isfile(part["value"]), part
                images += 1
    return images

def oracle_file(dataset, name):
    data = dataset.data.copy()
    data["prediction"] = [str(x) for x in data["answer"]]
    data.pop("image")
    path = os.path.abspath(f"oracle_{name}.xlsx")
    dump(data, path)
    return path

@check("vlmevalkit mcq")
def _():
    dataset = build_dataset("radvqa_mcq")
    images = prompts(dataset)
    path = oracle_file(dataset, "radvqa_mcq")
    scores = dataset.evaluate(path, model="exact_matching")
    overall = float(scores.iloc[0]["Overall"]) * (100 if float(scores.iloc[0]["Overall"]) <= 1 else 1)
    assert overall == 100.0, scores
    return f"{type(dataset).__name__}: {len(dataset.data):,} prompts, {images:,} images; its exact match {overall:.0f}"

@check("vlmevalkit open")
def _():
    dataset = build_dataset("radvqa_open")
    images = prompts(dataset)
    oracle_file(dataset, "radvqa_open")
    return f"{type(dataset).__name__}: {len(dataset.data):,} prompts, {images:,} images (scored by radvqa)"
'''

LMMS_PROBE = '''
import glob
import lmms_eval
from lmms_eval import evaluator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.loggers import EvaluationTracker
from lmms_eval.tasks import TaskManager
from lmms_eval.utils import get_datetime_str

class Oracle(lmms):
    """Stub model: answers each request with its document's reference answer."""
    def __init__(self):
        super().__init__()
    def generate_until(self, requests):
        out = []
        for request in requests:
            context, kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            assert doc_to_visual(doc)[0].size[0] > 0
            out.append(doc["answer"])
        return out
    def loglikelihood(self, requests):
        raise NotImplementedError
    def generate_until_multi_round(self, requests):
        raise NotImplementedError

@check("lmms-eval")
def _():
    manager = TaskManager(include_path=PATHS["lmms-eval"])
    assert "radvqa" in manager.all_tasks
    tracker = EvaluationTracker(output_path=os.path.abspath("lmms-out"))
    results = evaluator.simple_evaluate(model=Oracle(), tasks=["radvqa"], task_manager=manager,
                                        log_samples=True, batch_size=1, evaluation_tracker=tracker)
    samples = results.pop("samples")  # then save as lmms_eval.__main__ does with --log_samples
    tracker.save_results_aggregated(results=results, samples=samples, datetime_str=get_datetime_str())
    tracker.save_results_samples(task_name="radvqa", samples=samples["radvqa"])
    score = results["results"]["radvqa"]["radvqa_exact_match,none"]
    assert score == 100.0, results["results"]
    (log,) = glob.glob("lmms-out/**/*_samples_radvqa.jsonl", recursive=True)
    return f"task loaded, simple_evaluate: its score {score:.0f}; samples log {os.path.basename(log)}"
'''

PROBES = {
    "datasets 3": DATASETS_PROBE,
    "datasets 4": DATASETS_PROBE,
    "datasets 5": DATASETS_PROBE,
    "LLaMA-Factory 0.9.5": LLAMAFACTORY_PROBE,
    "LLaVA 1.2.2": LLAVA_PROBE,
    "VLMEvalKit": VLMEVALKIT_PROBE,
    "lmms-eval 0.7.3": LMMS_PROBE,
}


def score(
    paths: dict[str, Path], predictions: list[Path], fmt: str, expect: float | None, note: str = ""
) -> dict[str, object]:
    """``radvqa evaluate`` on a client's own prediction file(s)."""
    report = predictions[0].parent / f"radvqa-scores-{fmt}.json"
    try:
        run(
            [sys.executable, "-c", "from radvqa.cli import app; app()", "evaluate", str(paths["dataset"]),
             *map(str, predictions), "--json", str(report)]
        )
        average = json.loads(report.read_text())["overall"]["average"]
        ok = expect is None or average == expect
        detail = f"read {len(predictions)} file(s), average {average}{note}"
        return {"format": f"radvqa evaluate ({fmt})", "ok": ok, "detail": detail}
    except RuntimeError as exc:
        return {"format": f"radvqa evaluate ({fmt})", "ok": False, "detail": str(exc).splitlines()[-1][:200]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radvqa-clients"))
    parser.add_argument("--only", action="append", choices=sorted(CLIENTS), help="check only this client")
    parser.add_argument(
        "--vlmevalkit-src",
        type=Path,
        default=Path(os.environ.get("VLMEVALKIT_SRC", "/tmp/src/VLMEvalKit")),
        help="a checkout of open-compass/VLMEvalKit (it is not on PyPI)",
    )
    parser.add_argument("--keep-exports", action="store_true", help="reuse WORK/data from an earlier run")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    say("exporting the sample dataset ...")
    paths = make_exports(work, args.keep_exports)
    table: list[tuple[str, dict[str, object]]] = []
    for name in args.only or list(CLIENTS):
        say(f"{name}:")
        if name == "VLMEvalKit" and not (args.vlmevalkit_src / "vlmeval").is_dir():
            table.append((name, {"format": "-", "ok": False, "detail": f"no VLMEvalKit source at {args.vlmevalkit_src}"}))
            continue
        try:
            python = venv(work, name, CLIENTS[name], args.vlmevalkit_src.resolve())
        except RuntimeError as exc:
            table.append((name, {"format": "(install)", "ok": False, "detail": str(exc).splitlines()[0][:200]}))
            continue
        cwd = work / "runs" / name.replace(" ", "-").lower()
        if cwd.exists():
            shutil.rmtree(cwd)
        rows = probe(python, PROBES[name], paths, cwd)
        if name == "LLaVA 1.2.2" and (cwd / "llava-answers.jsonl").is_file():
            note = " (the stub model answers 'A' to everything)"
            rows.append(score(paths, [cwd / "llava-answers.jsonl"], "llava", None, note))
        if name == "VLMEvalKit" and (cwd / "oracle_radvqa_open.xlsx").is_file():
            rows.append(score(paths, [cwd / "oracle_radvqa_mcq.xlsx", cwd / "oracle_radvqa_open.xlsx"], "vlmevalkit", 100.0))
        if name == "lmms-eval 0.7.3":
            logs = sorted(cwd.glob("lmms-out/**/*_samples_radvqa.jsonl"))
            if logs:
                rows.append(score(paths, logs, "lmms-eval", 100.0))
        table += [(name, row) for row in rows]
    print(f"| client | format | result | detail |\n| --- | --- | --- | --- |")
    for name, row in table:
        print(f"| {name} | {row['format']} | {'ok' if row['ok'] else 'FAIL'} | {row['detail']} |")
    say(f"{len(table)} checks in {time.time() - started:.0f} s; logs under {work}/runs/*/probe.log")
    return 0 if table and all(row["ok"] for _, row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
