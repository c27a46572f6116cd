"""The four fine-tuning tasks as small adapters between config, data, model head and metrics.

Each task knows: which model head it needs (`model_task`, `head_kwargs`), how to load a split
(`load("train" | "eval" | "test")` -> readers.Split or None when not configured), which
feature arrays go to the device (`targets`, besides input_ids / token_type_ids /
attention_mask), how to score the model's outputs (`evaluate`) and write them
(`write_predictions`). Outputs are numpy arrays with one row per feature: `logits` [N, C]
(classification, regression with C = 1), [N, L, C] (tagging), or `start_logits` /
`end_logits` [N, L] (QA).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from bert_jax import paths
from bert_jax.finetuning import readers as fd
from bert_jax.finetuning import metrics as fm
from bert_jax.finetuning import squad
from bert_jax.errors import DataError
from bert_jax.finetuning.readers import Split

log = logging.getLogger("bert_jax")
TASKS = ("classification", "regression", "token_classification", "question_answering")


class _Task:
  name = ""
  model_task = ""
  targets: tuple[str, ...] = ()
  default_metric = ""

  def __init__(self, config, tokenizer):
    self.config, self.data, self.tokenizer = config, config.data, tokenizer
    self.label_names: list[str] | None = None

  @property
  def head_kwargs(self) -> dict:
    return {"num_labels": len(self.label_names)} if self.label_names else {}

  def _file(self, which: str) -> str:
    return {"train": self.data.train_file, "eval": self.data.eval_file,
            "test": self.data.test_file}[which]

  def _tfds_split(self, which: str) -> str:
    return {"train": self.data.train_split, "eval": self.data.eval_split,
            "test": self.data.test_split}[which]

  def _configured(self, which: str) -> bool:
    if self.data.source == "tfds":
      return bool(self._tfds_split(which))
    return bool(self._file(which))

  def _given_labels(self) -> list[str] | None:
    labels = [x.strip() for x in self.data.labels.split(",") if x.strip()]
    return labels or None


class Classification(_Task):
  """GLUE-style single sentences or pairs -> [CLS] pooled -> label (or a score: regression)."""
  name, model_task = "classification", "classification"
  targets = ("label",)
  default_metric = "accuracy"

  def _read(self, which: str):
    d = self.data
    if d.source == "tfds":
      examples, names = fd.read_glue_tfds(d.tfds_name, self._tfds_split(which), d.tfds_data_dir)
      return examples, names, f"{d.tfds_name}[{self._tfds_split(which)}]"
    path = self._file(which)
    return (fd.read_classification_file(path, d.format, d.text_a_key, d.text_b_key, d.label_key,
                                        labelled=which != "test"), None, path)

  def _labels(self, examples, source: str, labelled: bool):
    if not labelled or any(e["label"] is None for e in examples):
      return None
    return fd.label_ids(examples, self.label_names, source)

  def load(self, which: str) -> Split | None:
    if not self._configured(which):
      return None
    examples, names, source = self._read(which)
    if self.label_names is None:
      if which != "train":
        raise DataError("the label set comes from the training data: load the train split first")
      self.label_names = self._given_labels() or names or sorted(
          {e["label"] for e in examples if e["label"] is not None})
      if len(self.label_names) < 2:
        raise DataError(f"{source}: a single label {self.label_names} in the training data; a "
                        "classifier needs at least two (--config.data.labels)")
    # A test file whose every row has a label is scored too (the best-on-dev model's test
    # metrics); an unlabelled one is only predicted.
    labelled = which != "test" or all(e["label"] is not None for e in examples)
    labels = self._labels(examples, source, labelled)
    features = fd.featurize_classification(examples, self.tokenizer, self.data.max_seq_length,
                                           labels)
    return Split(which, examples, features, source)

  def evaluate(self, split: Split, outputs: dict) -> dict:
    return fm.classification_metrics(outputs["logits"], split.features["label"])

  def predictions(self, outputs: dict) -> list:
    return [self.label_names[i] for i in np.argmax(outputs["logits"], -1)]

  def write_predictions(self, split: Split, outputs: dict, workdir: str) -> str:
    lines = ["index\tprediction\tlabel"]
    for e, p in zip(split.examples, self.predictions(outputs)):
      lines.append(f"{e['index']}\t{p}\t{'' if e['label'] is None else e['label']}")
    return paths.atomic_write(os.path.join(workdir, f"{split.name}_predictions.tsv"),
                         "\n".join(lines) + "\n")


class Regression(Classification):
  """STS-B style: one output, mean squared error; labels are numbers."""
  name = "regression"
  default_metric = "pearson"

  @property
  def head_kwargs(self) -> dict:
    return {"num_labels": 1}

  def _labels(self, examples, source: str, labelled: bool):
    if not labelled or any(e["label"] is None for e in examples):
      return None
    out = []
    for n, e in enumerate(examples):
      try:
        out.append(float(e["label"]))
      except ValueError:
        raise DataError(f"{source} example {n}: label {e['label']!r} is not a number; a "
                        "regression task needs numeric labels (--config.data.label_key)") from None
    return out

  def load(self, which: str) -> Split | None:
    self.label_names = self.label_names or ["score"]  # no label set
    return super().load(which)

  def evaluate(self, split: Split, outputs: dict) -> dict:
    return fm.regression_metrics(outputs["logits"][:, 0], split.features["label"])

  def predictions(self, outputs: dict) -> list:
    return [f"{x:.6g}" for x in outputs["logits"][:, 0]]


class Tagging(_Task):
  """NER-style BIO tags per word; a word's tag is predicted on its first sub-token."""
  name, model_task = "token_classification", "token_classification"
  targets = ("labels", "label_weights")
  default_metric = "f1"

  def _read(self, which: str):
    d = self.data
    if d.source == "tfds":
      examples, names = fd.read_conll2003_tfds(self._tfds_split(which), d.tfds_data_dir,
                                               d.tfds_name or "conll2003")
      return examples, names, f"{d.tfds_name}[{self._tfds_split(which)}]"
    path = self._file(which)
    return (fd.read_tagging_file(path, d.format, d.tokens_key, d.tags_key,
                                 labelled=which != "test"), None, path)

  def load(self, which: str) -> Split | None:
    if not self._configured(which):
      return None
    examples, names, source = self._read(which)
    if self.label_names is None:
      seen = sorted({t for e in examples for t in e["tags"] or []} - {"O"})
      self.label_names = self._given_labels() or names or ["O"] + seen
    labelled = all(e["tags"] is not None for e in examples)
    tag_ids = fd.label_ids(examples, self.label_names, source, key="tags") if labelled else None
    features, cut = fd.featurize_tagging(examples, self.tokenizer, self.data.max_seq_length,
                                         tag_ids)
    if cut:
      log.warning("%s: %d words fall beyond max_seq_length=%d sub-tokens; they are not trained "
                  "on and are predicted 'O'", source, cut, self.data.max_seq_length)
    return Split(which, examples, features, source)

  def predictions(self, split: Split, outputs: dict) -> list[list[str]]:
    ids = np.argmax(outputs["logits"], -1)  # [N, L]
    outside = "O" if "O" in self.label_names else self.label_names[0]
    return [fd.word_predictions(ids[i], split.features["word_index"][i], len(e["tokens"]),
                                self.label_names, outside)
            for i, e in enumerate(split.examples)]

  def evaluate(self, split: Split, outputs: dict) -> dict:
    return fm.tagging_metrics(self.predictions(split, outputs),
                              [e["tags"] for e in split.examples])

  def write_predictions(self, split: Split, outputs: dict, workdir: str) -> str:
    lines = [json.dumps({"tokens": e["tokens"], "predictions": p, "tags": e["tags"]})
             for e, p in zip(split.examples, self.predictions(split, outputs))]
    return paths.atomic_write(os.path.join(workdir, f"{split.name}_predictions.jsonl"),
                         "\n".join(lines) + "\n")


class QuestionAnswering(_Task):
  """SQuAD v1.1 / v2.0: start and end logits over the context; doc stride windows."""
  name, model_task = "question_answering", "question_answering"
  targets = ("start_positions", "end_positions")
  default_metric = "f1"

  def load(self, which: str) -> Split | None:
    if not self._configured(which):
      return None
    d = self.data
    if d.source == "tfds":
      examples = squad.read_squad_tfds(d.tfds_name, self._tfds_split(which), d.tfds_data_dir)
      source = f"{d.tfds_name}[{self._tfds_split(which)}]"
    else:
      source = self._file(which)
      examples = squad.read_squad_json(source)
    if any(e.is_impossible for e in examples) and not d.version_2_with_negative:
      raise DataError(f"{source} has unanswerable (is_impossible) questions: set "
                      "--config.data.version_2_with_negative=True (configs/finetune/squad_v2.py)")
    features, lost = squad.featurize(
        examples, self.tokenizer, max_seq_length=d.max_seq_length, doc_stride=d.doc_stride,
        max_query_length=d.max_query_length, training=which == "train")
    if lost:
      log.warning("%s: %d answers match no context token; those questions are skipped", source,
                  lost)
    return Split(which, examples, features, source)

  def _postprocess(self, split: Split, outputs: dict):
    d = self.data
    return squad.postprocess(
        split.examples, split.features, outputs["start_logits"], outputs["end_logits"],
        n_best_size=d.n_best_size, max_answer_length=d.max_answer_length,
        version_2_with_negative=d.version_2_with_negative,
        null_score_diff_threshold=d.null_score_diff_threshold)

  def evaluate(self, split: Split, outputs: dict) -> dict:
    predictions, _, _ = self._postprocess(split, outputs)
    return squad.evaluate(split.examples, predictions)

  def write_predictions(self, split: Split, outputs: dict, workdir: str) -> str:
    predictions, null_odds, _ = self._postprocess(split, outputs)
    if self.data.version_2_with_negative:
      paths.atomic_write(os.path.join(workdir, f"{split.name}_null_odds.json"),
                    json.dumps(null_odds, indent=1) + "\n")
    return paths.atomic_write(os.path.join(workdir, f"{split.name}_predictions.json"),
                         json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")


def create_task(config, tokenizer) -> _Task:
  cls = {"classification": Classification, "regression": Regression,
         "token_classification": Tagging, "question_answering": QuestionAnswering}
  return cls[config.task](config, tokenizer)
