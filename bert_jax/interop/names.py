"""One table between our parameter tree and the HF / google-research/bert checkpoint names.

For BERT both HF and TF1 names; for ModernBERT HF's (`ModernBert*`) only (`tf1` is "").

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
_OUT_DIMS = {("qkv", "kernel"): 2,  # BERT, per query/key/value slice: [H, N, D] -> out (N, D)
             ("wqkv", "kernel"): 3,  # ModernBERT's fused [H, 3, N, D] -> HF Wqkv [3·N·D, H]
             ("wi", "kernel"): 2}  # ModernBERT's GLU [H, 2, I] -> HF Wi [2·I, H] (input, gate)


def _dense(ours: Path, hf: str, tf1: str, head: str, index=()) -> list[Entry]:
  return [Entry(ours + ("kernel",), index, hf + ".weight", tf1 + "/kernel", "kernel", head),
          Entry(ours + ("bias",), index, hf + ".bias", tf1 + "/bias", "vector", head)]


def _layer_norm(ours: Path, hf: str, tf1: str, head: str, index=()) -> list[Entry]:
  return [Entry(ours + ("scale",), index, hf + ".weight", tf1 + "/gamma", "vector", head),
          Entry(ours + ("bias",), index, hf + ".bias", tf1 + "/beta", "vector", head)]


def _modernbert_entries(config, task: str) -> list[Entry]:
  """HF ModernBert* names: `model.` for the encoder, `head.` / `decoder.` / `classifier.`."""
  base = () if task == "encoder" else ("model",)

  def vec(ours, hf, head):
    return Entry(base + ours if head == "encoder" else ours, (), hf, "", "vector", head)

  def norm(ours, hf, head="encoder"):
    out = [vec(ours + ("scale",), hf + ".weight", head)]
    if config.norm_bias:
      out.append(vec(ours + ("bias",), hf + ".bias", head))
    return out

  def dense(ours, hf, bias, head="encoder"):
    path = base + ours if head == "encoder" else ours
    out = [Entry(path + ("kernel",), (), hf + ".weight", "", "kernel", head)]
    if bias:
      out.append(Entry(path + ("bias",), (), hf + ".bias", "", "vector", head))
    return out

  out = [Entry(base + ("embeddings", "tok_embeddings", "embedding"), (),
               "model.embeddings.tok_embeddings.weight", "", "table", "encoder")]
  out += norm(("embeddings", "norm"), "model.embeddings.norm")
  for i in range(config.num_hidden_layers):
    lay, hf = ("encoder", "layers", i), f"model.layers.{i}"
    if i:
      out += norm(lay + ("attn_norm",), f"{hf}.attn_norm")
    out += dense(lay + ("attn", "wqkv"), f"{hf}.attn.Wqkv", config.attention_bias)
    out += dense(lay + ("attn", "wo"), f"{hf}.attn.Wo", config.attention_bias)
    out += norm(lay + ("mlp_norm",), f"{hf}.mlp_norm")
    out += dense(lay + ("mlp", "wi"), f"{hf}.mlp.Wi", config.mlp_bias)
    out += dense(lay + ("mlp", "wo"), f"{hf}.mlp.Wo", config.mlp_bias)
  out += norm(("final_norm",), "model.final_norm")
  if task == "encoder":
    return out
  # The prediction head: the MLM's, and each fine-tuning head's own copy (HF loads the MLM's
  # head into a classifier, as names match).
  head = "mlm" if task == "masked_lm" else "classifier"
  out += dense(("head", "dense"), "head.dense", config.classifier_bias, head)
  out += norm(("head", "norm"), "head.norm", head)
  if task == "masked_lm":
    if config.decoder_bias:
      out.append(Entry(("decoder_bias",), (), "decoder.bias", "", "vector", "mlm"))
  else:
    kind = "qa" if task == "question_answering" else "classifier"
    out.append(Entry(("classifier", "kernel"), (), "classifier.weight", "", "out_weights", kind))
    out.append(Entry(("classifier", "bias"), (), "classifier.bias", "", "vector", kind))
  return out


def entries(config: BertConfig, task: str, *, with_pooler: bool | None = None) -> list[Entry]:
  """Every tensor of a `task` model of the config's family (bert_jax.models.families)."""
  if config.model_type == "modernbert":
    return _modernbert_entries(config, task)
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
          or name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                      "decoder.weight"))  # ModernBERT's decoder: tied to tok_embeddings


# Tensors of heads another task has: unused by this task (a warning, not an error).
HEAD_PREFIXES = ("cls.", "cls/", "classifier.", "qa_outputs.", "output_weights", "output_bias",
                 "bert.pooler.", "bert/pooler/", "pooler.", "head.", "decoder.")


def leaf_paths(tree: dict, prefix: Path = ()) -> Iterator[tuple[Path, object]]:
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from leaf_paths(v, prefix + (k,))
    else:
      yield prefix + (k,), v
