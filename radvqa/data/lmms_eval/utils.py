"""lmms-eval task functions for a radvqa benchmark, written by `radvqa export --format lmms-eval`.

The task's own score is a quick exact match (letter, yes/no, or normalised answer text). For the
paper's nine-column table run `radvqa evaluate DATASET SAMPLES.jsonl` on the samples log that
`lmms-eval --log_samples` writes: each sample carries its radvqa question id.
"""

import re

LETTERS = "ABCD"


def _normalise(text):
    return " ".join(re.sub(r"[^\w]+", " ", str(text).lower().replace("_", " ")).split())


def radvqa_doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def radvqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    question = doc["question"].strip()
    if doc["question_type"] == "multiple_choice":
        options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, doc["choices"]))
        return f"{kwargs.get('pre_prompt', '')}{question}\n{options}{kwargs.get('mc_post_prompt', '')}"
    return f"{kwargs.get('pre_prompt', '')}{question}{kwargs.get('post_prompt', '')}"


def radvqa_doc_to_target(doc):
    return doc["answer"]


def _correct(doc, prediction):
    words = _normalise(prediction).split()
    if not words:
        return False
    if doc["question_type"] == "multiple_choice":
        return words[0] == doc["answer"].lower()
    if doc["question_type"] == "closed":
        return words[0] == doc["answer"].lower()
    return " ".join(words) == _normalise(doc["answer"])


def radvqa_process_results(doc, results):
    prediction = results[0] if results else ""
    return {
        "radvqa_exact_match": {
            "question_id": doc["metadata"]["question_id"],
            "question_type": doc["question_type"],
            "prediction": prediction,
            "score": 1.0 if _correct(doc, prediction) else 0.0,
        }
    }


def radvqa_aggregate(results):
    return 100.0 * sum(r["score"] for r in results) / len(results) if results else 0.0
