"""Fine-tuning data: readers (local CSV/TSV/JSONL/CoNLL files, local TFDS) and featurizers for
sequence classification / regression and token tagging. SQuAD lives in `bert_jax.finetuning.squad`.

Readers return plain examples; featurizers turn them into numpy arrays (N examples, L =
max_seq_length) that the trainer batches:
  classification: input_ids, token_type_ids, attention_mask int32 [N, L]; label int32 [N]
    (float32 for regression; absent for unlabelled test data).
  tagging: the same inputs; labels int32 [N, L] on the first sub-token of every word, 0
    elsewhere; label_weights float32 [N, L] (1 on first sub-tokens); word_index int32 [N, L]
    (the word each first sub-token starts, -1 elsewhere) to map predictions back to words.
Sequences are [CLS] A [SEP] (B [SEP]); pairs are truncated longest-first, one token at a time
from the end, as google-research/bert's run_classifier.py `_truncate_seq_pair`.

Data problems (missing file or column, a label outside the label set) raise DataError with a
one-line message naming the file or flag and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import io
import os

import numpy as np
from etils import epath

from bert_jax import paths
from bert_jax.errors import DataError
from bert_jax.text.tokenization import Tokenizer

# GLUE in TFDS: (text_a, text_b) feature names per task (label is "label" everywhere).
GLUE_TEXT_KEYS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
    "ax": ("premise", "hypothesis"),
}


@dataclasses.dataclass
class Split:
  """One split, featurized: `features` are the model's arrays, `examples` what they came from."""
  name: str  # train | eval | test
  examples: list
  features: dict  # str -> np.ndarray with leading dimension = number of features
  source: str  # file path or TFDS name, for messages
  extra: dict = dataclasses.field(default_factory=dict)


# ---- readers ----------------------------------------------------------------------------------
def infer_format(path: str, fmt: str) -> str:
  if fmt:
    return fmt
  ext = os.path.splitext(path)[1].lower()
  known = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".conll": "conll",
           ".txt": "conll", ".iob": "conll", ".bio": "conll"}
  if ext not in known:
    raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; set "
                    "--config.data.format=csv|tsv|jsonl|conll|json")
  return known[ext]


def _open(path: str):
  if not epath.Path(path).is_file():
    raise DataError(f"{path}: no such file (check --config.data.train_file/eval_file/test_file)")
  if paths.is_url(path):  # gs://...: bytes through epath, decoded as open() would
    return io.TextIOWrapper(epath.Path(path).open("rb"), encoding="utf-8", newline="")
  return open(path, encoding="utf-8", newline="")


def read_records(path: str, fmt: str = "") -> list[dict]:
  """Rows of a CSV/TSV file (header line = column names) or objects of a JSONL file."""
  fmt = infer_format(path, fmt)
  with _open(path) as f:
    if fmt in ("csv", "tsv"):
      # GLUE's TSVs contain unbalanced quotes: TSV is read without quote processing.
      reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",",
                              quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
      return list(reader)
    if fmt == "jsonl":
      rows = []
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except ValueError as e:
            raise DataError(f"{path} line {n}: not valid JSON ({e})") from None
      return rows
  raise DataError(f"{path}: format {fmt!r} is not a table; use csv, tsv or jsonl "
                  "(--config.data.format)")


def _column(row: dict, key: str, path: str, flag: str, n: int):
  """row[key], or a DataError naming the file, the flag and the columns there are."""
  if key not in row:
    where = f" (example {n})" if n else ""
    raise DataError(f"{path}: no column {key!r}{where} (--config.data.{flag}); the columns "
                    f"are: {', '.join(map(str, row))}")
  return row[key]


def read_classification_file(path: str, fmt: str, text_a_key: str, text_b_key: str,
                             label_key: str, labelled: bool = True) -> list[dict]:
  """Examples {text_a, text_b (or None), label (str, or None when unlabelled), index}."""
  rows = read_records(path, fmt)
  if not rows:
    raise DataError(f"{path}: no examples")
  out = []
  for i, row in enumerate(rows):
    label = None
    if labelled or label_key in row:
      label = _column(row, label_key, path, "label_key", i)
      label = None if label is None else str(label).strip()
    out.append({"text_a": str(_column(row, text_a_key, path, "text_a_key", i)),
                "text_b": (str(_column(row, text_b_key, path, "text_b_key", i))
                           if text_b_key else None),
                "label": label, "index": row.get("idx", row.get("index", i))})
  return out


def read_conll(path: str) -> list[dict]:
  """CoNLL columns (word first, tag last; blank line between sentences; -DOCSTART- skipped)
  -> examples {tokens, tags}."""
  sentences, tokens, tags = [], [], []
  with _open(path) as f:
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts or parts[0] == "-DOCSTART-":
        if tokens:
          sentences.append({"tokens": tokens, "tags": tags})
        tokens, tags = [], []
        continue
      if len(parts) < 2:
        raise DataError(f"{path} line {n}: expected 'WORD ... TAG' columns, got {line.strip()!r}")
      tokens.append(parts[0])
      tags.append(parts[-1])
  if tokens:
    sentences.append({"tokens": tokens, "tags": tags})
  if not sentences:
    raise DataError(f"{path}: no sentences")
  return sentences


def read_tagging_file(path: str, fmt: str, tokens_key: str, tags_key: str,
                      labelled: bool = True) -> list[dict]:
  fmt = infer_format(path, fmt)
  if fmt == "conll":
    return read_conll(path)
  rows = read_records(path, fmt)
  out = []
  for i, row in enumerate(rows):
    tokens = _column(row, tokens_key, path, "tokens_key", i)
    tags = _column(row, tags_key, path, "tags_key", i) if labelled or tags_key in row else None
    if tags is not None and len(tags) != len(tokens):
      raise DataError(f"{path} example {i}: {len(tokens)} tokens but {len(tags)} tags")
    out.append({"tokens": [str(t) for t in tokens],
                "tags": None if tags is None else [str(t) for t in tags]})
  if not out:
    raise DataError(f"{path}: no examples")
  return out


def tfds_examples(name: str, split: str, data_dir: str):
  """(numpy examples of an already prepared TFDS dataset, its features). Never downloads."""
  import tensorflow_datasets as tfds
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # noqa: BLE001 - unknown names raise several types
    raise DataError(f"--config.data.tfds_name={name}: {str(e).splitlines()[0][:200]}") from None
  if not builder.is_prepared():
    raise DataError(f"--config.data.tfds_name={name} is not prepared in "
                    f"{data_dir or builder.data_dir}: run `tfds build {name} --data_dir=DIR` "
                    "where there is network, or use local files (--config.data.train_file=...)")
  if split not in builder.info.splits:
    raise DataError(f"--config.data: split {split!r} is not in {name} (it has "
                    f"{', '.join(builder.info.splits)})")
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return list(tfds.as_numpy(ds)), builder.info.features


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def read_glue_tfds(name: str, split: str, data_dir: str) -> tuple[list[dict], list[str] | None]:
  """GLUE from TFDS -> (examples, label names or None for STS-B). Test labels are -1 -> None."""
  task = name.split("/")[-1].split(":")[0]
  task = "mnli" if task.startswith("mnli") else task
  if task not in GLUE_TEXT_KEYS:
    raise DataError(f"--config.data.tfds_name={name}: not a GLUE task "
                    f"({', '.join(GLUE_TEXT_KEYS)})")
  rows, features = tfds_examples(name, split, data_dir)
  a, b = GLUE_TEXT_KEYS[task]
  names = None if task == "stsb" else list(features["label"].names)
  out = []
  for r in rows:
    label = r["label"]
    if names is not None:
      label = None if label < 0 else names[int(label)]
    else:
      label = None if label < 0 else str(float(label))
    out.append({"text_a": _text(r[a]), "text_b": _text(r[b]) if b else None, "label": label,
                "index": int(r["idx"])})
  return out, names


def read_conll2003_tfds(split: str, data_dir: str, name: str = "conll2003"):
  rows, features = tfds_examples(name, split, data_dir)
  names = list(features["ner"].feature.names)
  return [{"tokens": [_text(t) for t in r["tokens"]], "tags": [names[int(t)] for t in r["ner"]]}
          for r in rows], names


# ---- labels -----------------------------------------------------------------------------------
def label_ids(examples: list[dict], label_names: list[str], source: str, key: str = "label"):
  """Label strings -> ids, or a DataError naming the first unknown label."""
  index = {name: i for i, name in enumerate(label_names)}
  out = []
  for n, ex in enumerate(examples):
    values = ex[key] if isinstance(ex[key], list) else [ex[key]]
    for v in values:
      if v not in index:
        raise DataError(f"{source} example {n}: label {v!r} is not in the label set "
                        f"[{', '.join(label_names)}]; fix the data or set --config.data.labels")
    out.append([index[v] for v in values] if isinstance(ex[key], list) else index[ex[key]])
  return out


# ---- featurizers ------------------------------------------------------------------------------
def truncate_pair(a: list, b: list | None, max_tokens: int) -> None:
  """In place: pop from the end of the longer list until len(a) + len(b) <= max_tokens."""
  while len(a) + len(b or []) > max_tokens:
    (a if not b or len(a) > len(b) else b).pop()


def featurize_classification(examples: list[dict], tokenizer: Tokenizer, max_seq_length: int,
                             labels: list | None) -> dict:
  """examples + label ids (int / float, or None) -> arrays (see the module docstring)."""
  n = len(examples)
  ids_a = tokenizer.encode_batch([e["text_a"] for e in examples])
  pairs = examples and examples[0]["text_b"] is not None
  ids_b = tokenizer.encode_batch([e["text_b"] for e in examples]) if pairs else [None] * n
  input_ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
  token_type_ids = np.zeros((n, max_seq_length), np.int32)
  attention_mask = np.zeros((n, max_seq_length), np.int32)
  for i, (a, b) in enumerate(zip(ids_a, ids_b)):
    truncate_pair(a, b, max_seq_length - (3 if b is not None else 2))
    seq = [tokenizer.cls_id] + a + [tokenizer.sep_id]
    types = [0] * len(seq)
    if b is not None:
      seq += b + [tokenizer.sep_id]
      types += [1] * (len(b) + 1)
    input_ids[i, :len(seq)] = seq
    token_type_ids[i, :len(seq)] = types
    attention_mask[i, :len(seq)] = 1
  features = {"input_ids": input_ids, "token_type_ids": token_type_ids,
              "attention_mask": attention_mask}
  if labels is not None:
    features["label"] = np.asarray(labels, np.float32 if labels and isinstance(
        labels[0], float) else np.int32)
  return features


def featurize_tagging(examples: list[dict], tokenizer: Tokenizer, max_seq_length: int,
                      tag_ids: list[list[int]] | None) -> tuple[dict, int]:
  """Words -> sub-tokens; a word's tag sits on its first sub-token. Words past max_seq_length - 2
  sub-tokens are cut (predicted "O" at evaluation); returns (arrays, words cut)."""
  n = len(examples)
  flat = [w for e in examples for w in e["tokens"]]
  pieces = tokenizer.encode_batch(flat) if flat else []
  input_ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
  mask = np.zeros((n, max_seq_length), np.int32)
  labels = np.zeros((n, max_seq_length), np.int32)
  weights = np.zeros((n, max_seq_length), np.float32)
  word_index = np.full((n, max_seq_length), -1, np.int32)
  cut, k = 0, 0
  for i, e in enumerate(examples):
    seq, pos = [tokenizer.cls_id], 1
    for w in range(len(e["tokens"])):
      sub = pieces[k + w] or [tokenizer.unk_id]  # a word that tokenizes to nothing still counts
      if pos + len(sub) > max_seq_length - 1:
        cut += len(e["tokens"]) - w
        break
      word_index[i, pos] = w
      weights[i, pos] = 1.0
      if tag_ids is not None:
        labels[i, pos] = tag_ids[i][w]
      seq += sub
      pos += len(sub)
    k += len(e["tokens"])
    seq.append(tokenizer.sep_id)
    input_ids[i, :len(seq)] = seq
    mask[i, :len(seq)] = 1
  features = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids),
              "attention_mask": mask, "label_weights": weights, "word_index": word_index}
  if tag_ids is not None:
    features["labels"] = labels
  return features, cut


def word_predictions(predicted_ids: np.ndarray, word_index: np.ndarray, num_words: int,
                     tag_names: list[str], outside: str = "O") -> list[str]:
  """One sentence: predicted tag id per position [L] -> a tag per word (cut words: outside)."""
  tags = [outside] * num_words
  for pos in np.nonzero(word_index >= 0)[0]:
    tags[int(word_index[pos])] = tag_names[int(predicted_ids[pos])]
  return tags
