"""One table between our parameter tree and the HF / google-research/bert checkpoint names.

Each `Entry` ties a slice of one of our parameters (the fused QKV kernel per query/key/value)
to one named tensor in HF transformers' and in
google-research/bert's (TF1) naming, with the layout rules:

- `kernel`: a dense kernel, ours [in..., out...] -> TF1 [in, out] -> HF [out, in] (transposed).
- `out_weights`: a classifier stored [out, in] by both TF1 (`output_weights`) and HF; ours [in, out].
- `vector` / `table`: biases, LayerNorm gamma/beta, embedding tables: same layout everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from bert_jax.models.config import BertConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Entry:
  ours: Path  # path in our parameter tree (nnx.to_pure_dict of the model state)
  index: tuple  # index into our array (the qkv slot) or () for the whole array
  hf: str  # HF transformers state-dict name (a bare BertModel's names lack the "bert." prefix)
  tf1: str  # google-research/bert variable name
  layout: str  # kernel | out_weights | vector | table
  head: str  # which part: "encoder", "pooler", "mlm", "nsp", "classifier", "qa"

  def to_2d(self, ours_slice: np.ndarray) -> np.ndarray:
    """Our slice -> TF1 layout."""
    if self.layout in ("vector",):
      return ours_slice.reshape(-1)
    if self.layout == "table":
      return ours_slice
    n_out = _OUT_DIMS.get(self.ours[-2:], 1)
    size_out = int(np.prod(ours_slice.shape[ours_slice.ndim - n_out:]))
    mat = ours_slice.reshape(-1, size_out)  # [in, out]
    return mat.T if self.layout == "out_weights" else mat

  def from_2d(self, tensor: np.ndarray, slice_shape: tuple[int, ...]) -> np.ndarray:
    """TF1 layout -> our slice."""
    if self.layout == "out_weights":
      tensor = tensor.T
    return tensor.reshape(slice_shape)

  def tf1_to_hf(self, tensor: np.ndarray) -> np.ndarray:
    return tensor.T if self.layout == "kernel" else tensor

  def hf_to_tf1(self, tensor: np.ndarray) -> np.ndarray:
    return tensor.T if self.layout == "kernel" else tensor

  def expected_tf1_shape(self, slice_shape: tuple[int, ...]) -> tuple[int, ...]:
    return self.to_2d(np.empty(slice_shape, np.int8)).shape

  def expected_hf_shape(self, slice_shape: tuple[int, ...]) -> tuple[int, ...]:
    return self.tf1_to_hf(np.empty(self.expected_tf1_shape(slice_shape), np.int8)).shape


# How many trailing axes of our kernel are output axes (default 1).
_OUT_DIMS = {("qkv", "kernel"): 2}  # per query/key/value slice: [H, N, D] -> out = (N, D)


def _dense(ours: Path, hf: str, tf1: str, head: str, index=()) -> list[Entry]:
  return [Entry(ours + ("kernel",), index, hf + ".weight", tf1 + "/kernel", "kernel", head),
          Entry(ours + ("bias",), index, hf + ".bias", tf1 + "/bias", "vector", head)]


def _layer_norm(ours: Path, hf: str, tf1: str, head: str, index=()) -> list[Entry]:
  return [Entry(ours + ("scale",), index, hf + ".weight", tf1 + "/gamma", "vector", head),
          Entry(ours + ("bias",), index, hf + ".bias", tf1 + "/beta", "vector", head)]


def entries(config: BertConfig, task: str, *, with_pooler: bool | None = None) -> list[Entry]:
  """Every tensor of a `task` model (see bert_jax.models.TASKS)."""
  if with_pooler is None:
    with_pooler = task in ("pretraining", "encoder", "classification")
  base = () if task == "encoder" else ("bert",)
  out: list[Entry] = []
  emb = base + ("embeddings",)
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    out.append(Entry(emb + (name, "embedding"), (), f"bert.embeddings.{name}.weight",
                     f"bert/embeddings/{name}", "table", "encoder"))
  out += _layer_norm(emb + ("layer_norm",), "bert.embeddings.LayerNorm",
                     "bert/embeddings/LayerNorm", "encoder")
  for i in range(config.num_hidden_layers):
    lay = base + ("encoder", "layers", i)
    hf, tf = f"bert.encoder.layer.{i}", f"bert/encoder/layer_{i}"
    for j, qkv in enumerate(("query", "key", "value")):
      out.append(Entry(lay + ("attention", "qkv", "kernel"), (slice(None), j),
                       f"{hf}.attention.self.{qkv}.weight",
                       f"{tf}/attention/self/{qkv}/kernel", "kernel", "encoder"))
      out.append(Entry(lay + ("attention", "qkv", "bias"), (j,),
                       f"{hf}.attention.self.{qkv}.bias",
                       f"{tf}/attention/self/{qkv}/bias", "vector", "encoder"))
    out += _dense(lay + ("attention", "output"), f"{hf}.attention.output.dense",
                  f"{tf}/attention/output/dense", "encoder")
    out += _layer_norm(lay + ("attention", "layer_norm"), f"{hf}.attention.output.LayerNorm",
                       f"{tf}/attention/output/LayerNorm", "encoder")
    out += _dense(lay + ("intermediate",), f"{hf}.intermediate.dense",
                  f"{tf}/intermediate/dense", "encoder")
    out += _dense(lay + ("output",), f"{hf}.output.dense", f"{tf}/output/dense", "encoder")
    out += _layer_norm(lay + ("layer_norm",), f"{hf}.output.LayerNorm",
                       f"{tf}/output/LayerNorm", "encoder")
  if with_pooler:
    out += _dense(base + ("pooler", "dense"), "bert.pooler.dense", "bert/pooler/dense",
                  "pooler")
  if task in ("pretraining", "masked_lm"):  # masked_lm: HF's BertForMaskedLM, the same names
    out += _dense(("mlm", "transform"), "cls.predictions.transform.dense",
                  "cls/predictions/transform/dense", "mlm")
    out += _layer_norm(("mlm", "layer_norm"), "cls.predictions.transform.LayerNorm",
                       "cls/predictions/transform/LayerNorm", "mlm")
    out.append(Entry(("mlm", "output_bias"), (), "cls.predictions.bias",
                     "cls/predictions/output_bias", "vector", "mlm"))
  if task == "pretraining":
    out.append(Entry(("nsp", "kernel"), (), "cls.seq_relationship.weight",
                     "cls/seq_relationship/output_weights", "out_weights", "nsp"))
    out.append(Entry(("nsp", "bias"), (), "cls.seq_relationship.bias",
                     "cls/seq_relationship/output_bias", "vector", "nsp"))
  elif task in ("classification", "token_classification"):
    # google-research/bert run_classifier.py names (also used by TF NER ports).
    out.append(Entry(("classifier", "kernel"), (), "classifier.weight", "output_weights",
                     "out_weights", "classifier"))
    out.append(Entry(("classifier", "bias"), (), "classifier.bias", "output_bias", "vector",
                     "classifier"))
  elif task == "question_answering":
    out.append(Entry(("qa_outputs", "kernel"), (), "qa_outputs.weight",
                     "cls/squad/output_weights", "out_weights", "qa"))
    out.append(Entry(("qa_outputs", "bias"), (), "qa_outputs.bias", "cls/squad/output_bias",
                     "vector", "qa"))
  return out


# Names that any checkpoint may carry and that are never parameters of ours.
def is_ignorable(name: str) -> bool:
  """Optimizer slots, step counters, buffers and tied copies."""
  leaf = name.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
  return (leaf in ("adam_m", "adam_v", "global_step", "position_ids", "token_type_ids",
                   "good_steps", "bad_steps", "loss_scale", "current_loss_scale")
          or name.endswith(("/adam_m", "/adam_v"))
          or name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"))


# Tensors of heads another task has: unused by this task (a warning, not an error).
HEAD_PREFIXES = ("cls.", "cls/", "classifier.", "qa_outputs.", "output_weights", "output_bias",
                 "bert.pooler.", "bert/pooler/", "pooler.")


def leaf_paths(tree: dict, prefix: Path = ()) -> Iterator[tuple[Path, object]]:
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from leaf_paths(v, prefix + (k,))
    else:
      yield prefix + (k,), v
