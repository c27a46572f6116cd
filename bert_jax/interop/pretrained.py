"""Load and save encoder checkpoints in the formats people have: HF, google-research/bert, ours.

Both families: BERT (every format) and ModernBERT (HF `model_type: modernbert`, and ours).

    model = bert_jax.load_pretrained("path/to/bert-base-uncased")           # HF directory
    model = bert_jax.load_pretrained("uncased_L-12_H-768_A-12", task="classification",
                                     num_labels=3)                         # TF1 directory
    bert_jax.save_pretrained(model, "out/hf", format="hf", vocab="path/to/vocab.txt")

Formats (detected from the directory's files):
- "hf": `config.json` + `model.safetensors` (or a sharded `model.safetensors.index.json`;
  `pytorch_model.bin` only through `torch.load(weights_only=True)`, never plain pickle).
- "tf1": `bert_config.json` + `bert_model.ckpt.{index,data-*}` (optimizer slots skipped).
- "orbax" (ours): `bert_jax.json` + `config.json` (every BertConfig field) + `params/` (an
  Orbax checkpoint of the parameter tree, as nested dicts) — what `bert_jax.export` writes.
Every save writes into a temporary directory and renames it into place, and copies the
vocabulary (`vocab.txt`, `spm.model`) alongside.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from etils import epath
from flax import nnx

from bert_jax import paths
from bert_jax.errors import UserError
from bert_jax.interop import names as names_lib
from bert_jax.interop import safetensors_io
from bert_jax.models import families
from bert_jax.models.config import (CONFIG_CLASSES, BertConfig, ModelConfig, config_class,
                                    config_from_json_file)
from bert_jax.models.families import create_model

log = logging.getLogger("bert_jax")

FORMATS = ("hf", "tf1", "orbax")
VOCAB_FILES = ("vocab.txt", "spm.model", "tokenizer.json")
# Copied with a tokenizer.json when it sits beside it (bert_jax.vocab --kind=bpe writes one, HF
# directories have one): transformers' AutoTokenizer reads the special tokens' roles from it.
TOKENIZER_CONFIG = "tokenizer_config.json"
EXPORT_MARKER = "bert_jax.json"
FORMAT_VERSION = 1
_HF_ARCH = {  # per family: task -> HF class name (config.json `architectures`)
    "bert": {"pretraining": "BertForPreTraining", "masked_lm": "BertForMaskedLM",
             "encoder": "BertModel", "classification": "BertForSequenceClassification",
             "token_classification": "BertForTokenClassification",
             "question_answering": "BertForQuestionAnswering"},
    "modernbert": {"masked_lm": "ModernBertForMaskedLM", "encoder": "ModernBertModel",
                   "classification": "ModernBertForSequenceClassification",
                   "token_classification": "ModernBertForTokenClassification",
                   "question_answering": "ModernBertForQuestionAnswering"},
}
_FAMILY_NAMES = {"bert": "BERT", "modernbert": "ModernBERT"}


class CheckpointError(UserError):
  """A checkpoint that cannot be loaded as asked; the message names the file and the fix."""


# ---- format detection -------------------------------------------------------------------------
def _tf1_prefix(p: epath.Path) -> epath.Path | None:
  """The TF1 checkpoint prefix in directory p (bert_model.ckpt, or the only *.index)."""
  if (p / "bert_model.ckpt.index").exists():
    return p / "bert_model.ckpt"
  state = p / "checkpoint"
  if state.exists():
    for line in state.read_text().splitlines():
      if line.startswith("model_checkpoint_path:"):
        name = line.split(":", 1)[1].strip().strip('"')
        cand = epath.Path(name) if os.path.isabs(name) else p / name
        if epath.Path(str(cand) + ".index").exists():
          return cand
  indexes = sorted(p.glob("*.index"))
  if len(indexes) == 1:
    return epath.Path(str(indexes[0])[: -len(".index")])
  return None


def detect_format(path) -> str:
  """'hf' | 'tf1' | 'orbax' for a checkpoint directory, or a CheckpointError saying why not."""
  p = epath.Path(path)
  if epath.Path(str(p) + ".index").exists():  # a TF1 prefix such as .../bert_model.ckpt
    return "tf1"
  if not p.exists():
    raise CheckpointError(f"{path}: no such checkpoint directory; pass a directory holding an "
                          "HF model, a google-research/bert checkpoint or a bert_jax export")
  if not p.is_dir():
    raise CheckpointError(f"{path}: is a file; pass the directory that holds it (with its "
                          "config.json or bert_config.json)")
  if (p / EXPORT_MARKER).exists():
    return "orbax"
  if (p / "config.json").exists() and any(
      (p / f).exists() for f in ("model.safetensors", "model.safetensors.index.json",
                                 "pytorch_model.bin")):
    return "hf"
  if (p / "bert_config.json").exists() and _tf1_prefix(p) is not None:
    return "tf1"
  found = ", ".join(sorted(x.name for x in p.iterdir())[:8]) or "nothing"
  raise CheckpointError(
      f"{path}: not a BERT checkpoint directory (found: {found}); expected config.json + "
      "model.safetensors (HF), bert_config.json + bert_model.ckpt.* (google-research/bert) or "
      f"{EXPORT_MARKER} + params/ (bert_jax export)")


# ---- reading the named formats ----------------------------------------------------------------
class _Source:
  """Named tensors of a checkpoint: shapes up front, values on demand."""

  def __init__(self, where: str, shapes: dict[str, tuple], get: Callable[[str], np.ndarray]):
    self.where, self.shapes, self.get = where, shapes, get


def _hf_config(p: epath.Path) -> ModelConfig:
  """config.json of an HF directory as the config of its family (by `model_type`)."""
  try:
    model_type = json.loads((p / "config.json").read_text()).get("model_type")
  except (ValueError, AttributeError, UnicodeDecodeError):
    model_type = None  # from_json_file says what is wrong with the file
  if model_type is not None and model_type not in CONFIG_CLASSES:
    raise CheckpointError(
        f"{p / 'config.json'}: model_type {model_type!r} is not supported; bert_jax loads "
        f"{', '.join(CONFIG_CLASSES)} checkpoints (convert the model or use one of those)")
  return config_class(model_type).from_json_file(p / "config.json")


def _read_hf(p: epath.Path) -> tuple[ModelConfig, _Source]:
  config = _hf_config(p)
  if (p / "model.safetensors").exists() or (p / "model.safetensors.index.json").exists():
    where, held = _open_hf_safetensors(p)
    stored = _normalize_hf_names({k: k for k in held}, config)  # our name -> name in the file
    return config, _Source(where, {k: held[v].shapes[v] for k, v in stored.items()},
                           lambda name: held[stored[name]][stored[name]])
  where = str(p / "pytorch_model.bin")
  try:
    import torch
  except ImportError:
    raise CheckpointError(
        f"{where}: PyTorch .bin weights need torch (pip install torch); or convert them to "
        "model.safetensors") from None
  try:
    sd = torch.load(where, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 - torch raises many types here
    raise CheckpointError(f"{where}: cannot be read safely with torch.load(weights_only=True) "
                          f"({type(e).__name__}); convert it to safetensors") from None
  tensors = _normalize_hf_names({k: v.float().numpy() for k, v in sd.items()}, config)
  return config, _Source(where, {k: tuple(v.shape) for k, v in tensors.items()},
                         tensors.__getitem__)


def _open_hf_safetensors(p: epath.Path) -> tuple[str, dict]:
  """(where, {tensor name: the lazily opened file holding it}) for model.safetensors or shards."""
  if (p / "model.safetensors").exists():
    where = str(p / "model.safetensors")
    try:
      tensors = safetensors_io.lazy_load(where)
    except safetensors_io.SafetensorsError as e:
      raise CheckpointError(str(e)) from None
    return where, dict.fromkeys(tensors, tensors)
  where = str(p / "model.safetensors.index.json")
  try:
    weight_map = json.loads((p / "model.safetensors.index.json").read_text())["weight_map"]
    files = sorted(set(weight_map.values()))
  except (ValueError, KeyError, TypeError):
    raise CheckpointError(f"{where}: not a valid safetensors index (no weight_map)") from None
  held: dict[str, safetensors_io.LazyTensors] = {}
  for f in files:
    if "/" in f or f.startswith(".."):
      raise CheckpointError(f"{where}: shard name {f!r} escapes the checkpoint directory")
    try:
      shard = safetensors_io.lazy_load(str(p / f))
    except FileNotFoundError:
      raise CheckpointError(f"{p / f}: shard listed in {where} is missing") from None
    except safetensors_io.SafetensorsError as e:
      raise CheckpointError(str(e)) from None
    held.update(dict.fromkeys(shard, shard))  # a name in two shards: the later one, as before
  return where, held


def _normalize_hf_names(tensors: dict, config: ModelConfig) -> dict:
  out = {}
  if config.model_type == "modernbert":  # a ModernBertModel saved on its own lacks "model."
    bare = not any(k.startswith("model.") for k in tensors)
    return {("model." + k if bare and k.startswith(("embeddings.", "layers.", "final_norm."))
             else k): v for k, v in tensors.items()}
  bare = not any(k.startswith("bert.") for k in tensors)  # a BertModel saved on its own
  for k, v in tensors.items():
    k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                  "LayerNorm.bias")
    if bare and k.startswith(("embeddings.", "encoder.", "pooler.")):
      k = "bert." + k
    out[k] = v
  return out


def _read_tf1(p: epath.Path) -> tuple[BertConfig, _Source]:
  import tensorflow as tf  # data/interop code only
  tf.config.set_visible_devices([], "GPU")
  if epath.Path(str(p) + ".index").exists():
    prefix, folder = p, p.parent
  else:
    prefix, folder = _tf1_prefix(p), p
  config_path = folder / "bert_config.json"
  if not config_path.exists():
    raise CheckpointError(f"{config_path}: missing; a google-research/bert checkpoint needs its "
                          "bert_config.json beside bert_model.ckpt.*")
  config = BertConfig.from_json_file(config_path)
  try:
    reader = tf.train.load_checkpoint(str(prefix))
  except Exception as e:  # noqa: BLE001 - TF raises DataLossError, NotFoundError, ...
    raise CheckpointError(f"{prefix}: cannot read TF checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]})") from None
  shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}

  def get(name):
    try:
      return reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(f"{prefix}: tensor {name} is unreadable ({type(e).__name__}); the "
                            "checkpoint data file is truncated or corrupt") from None

  return config, _Source(str(prefix), shapes, get)


# ---- building a model from named tensors ------------------------------------------------------
def _slice_shape(shape: tuple, index: tuple) -> tuple:
  out = []
  for i, dim in enumerate(shape):
    idx = index[i] if i < len(index) else slice(None)
    if isinstance(idx, slice):
      out.append(len(range(*idx.indices(dim))))
  return tuple(out)


def _get_path(tree: dict, path: tuple):
  for k in path:
    tree = tree[k]
  return tree


def _set_path(tree: dict, path: tuple, value):
  for k in path[:-1]:
    tree = tree[k]
  tree[path[-1]] = value


def _build(config: ModelConfig, task: str, src: _Source, naming: str, seed: int,
           head_kwargs: dict) -> nnx.Module:
  key = "hf" if naming == "hf" else "tf1"
  if task == "pretraining" and config.model_type == "modernbert":
    task = "masked_lm"  # ModernBERT's pretraining model (it has no sentence-pair head)
  try:
    families.check_task(config, task)
  except ValueError as e:
    raise CheckpointError(f"{src.where}: {e}") from None
  all_entries = names_lib.entries(config, task)
  # The vocabulary check first: the most common mismatch, with the most useful message.
  word = all_entries[0]
  if getattr(word, key) in src.shapes:
    rows = src.shapes[getattr(word, key)][0]
    if rows != config.vocab_size:
      raise CheckpointError(
          f"{src.where}: {getattr(word, key)} has {rows} rows but the config says vocab_size="
          f"{config.vocab_size}; make vocab_size in the config file equal the vocabulary size")
  if task in ("classification", "token_classification") and "num_labels" not in head_kwargs:
    cls_name = getattr(all_entries[-1], key)  # classifier bias
    if cls_name in src.shapes:
      head_kwargs = dict(head_kwargs, num_labels=src.shapes[cls_name][0])
  graphdef, abs_state = nnx.split(nnx.eval_shape(lambda: create_model(config, task,
                                                                       **head_kwargs)))
  template = nnx.to_pure_dict(abs_state)
  arrays: dict = jax.tree.map(lambda _: None, template)
  used: set[str] = set()
  missing: list[names_lib.Entry] = []
  for e in all_entries:
    name = getattr(e, key)
    if name not in src.shapes:
      missing.append(e)
      continue
    full = _get_path(template, e.ours)
    slice_shape = _slice_shape(full.shape, e.index)
    expected = e.expected_hf_shape(slice_shape) if key == "hf" else e.expected_tf1_shape(
        slice_shape)
    if tuple(src.shapes[name]) != tuple(expected):
      raise CheckpointError(
          f"{src.where}: tensor {name} has shape {list(src.shapes[name])} but the config "
          f"(hidden_size={config.hidden_size}, intermediate_size={config.intermediate_size}, "
          f"vocab_size={config.vocab_size}) needs {list(expected)}; the config file does not "
          "match these weights")
    t = np.asarray(src.get(name), dtype=np.float32)
    t = e.hf_to_tf1(t) if key == "hf" else t
    if _get_path(arrays, e.ours) is None:
      _set_path(arrays, e.ours, np.zeros(full.shape, np.float32))
    _get_path(arrays, e.ours)[e.index] = e.from_2d(t, slice_shape)
    used.add(name)
  leftover = sorted(n for n in src.shapes if n not in used and not names_lib.is_ignorable(n))
  unused_heads = [n for n in leftover if n.startswith(names_lib.HEAD_PREFIXES)]
  unexpected = [n for n in leftover if n not in unused_heads]
  if unexpected:
    raise CheckpointError(
        f"{src.where}: unexpected tensor {unexpected[0]} ({len(unexpected)} in all) for a "
        f"{config.num_hidden_layers}-layer {_FAMILY_NAMES[config.model_type]}; the config file "
        "does not match these weights")
  if unused_heads:
    log.warning("%s: %d tensors not used by task %r (e.g. %s)", src.where, len(unused_heads),
                task, unused_heads[0])
  missing_encoder = [e for e in missing if e.head == "encoder"]
  if missing_encoder:
    raise CheckpointError(
        f"{src.where}: missing tensor {getattr(missing_encoder[0], key)} "
        f"({len(missing_encoder)} encoder tensors missing); the checkpoint is incomplete or "
        "has fewer layers than the config's num_hidden_layers")
  if missing:
    heads = sorted({e.head for e in missing})
    log.warning("%s: no weights for %s; initialising them fresh (seed %d)", src.where,
                ", ".join(heads), seed)
    # One jitted init instead of an eager (op-by-op compiled) one: much faster on CPU. The key
    # is an argument, so every seed compiles the same program (a persistent compilation cache,
    # e.g. finetune_suite's, serves them all); the values equal create_model(seed=seed)'s.
    fresh = jax.jit(lambda key: nnx.to_pure_dict(nnx.state(
        create_model(config, task, seed=key, **head_kwargs), nnx.Param)))(jax.random.key(seed))
    for e in missing:
      _set_path(arrays, e.ours, np.asarray(_get_path(fresh, e.ours)))
  nnx.replace_by_pure_dict(abs_state, jax.tree.map(jnp.asarray, arrays))
  return nnx.merge(graphdef, abs_state)


def _hf_task(p: epath.Path, config: ModelConfig) -> str:
  """The task of an HF directory's first `architectures` entry (if none of ours: "pretraining"
  for BERT, "masked_lm" for ModernBERT)."""
  try:
    archs = json.loads((p / "config.json").read_text()).get("architectures") or []
  except (ValueError, AttributeError):
    archs = []
  by_arch = {arch: task for task, arch in _HF_ARCH[config.model_type].items()}
  default = "masked_lm" if config.model_type == "modernbert" else "pretraining"
  return by_arch.get(archs[0], default) if archs else default


_task_of = families.task_of


# ---- our own format ---------------------------------------------------------------------------
def _params_tree(model: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _overridden(config: ModelConfig, overrides) -> ModelConfig:
  overrides = overrides(config) if callable(overrides) else dict(overrides or {})
  return config.replace(**overrides) if overrides else config


def _load_orbax(p: epath.Path, task: str | None, config_overrides, seed: int,
                head_kwargs: dict) -> nnx.Module:
  import orbax.checkpoint as ocp
  try:
    meta = json.loads((p / EXPORT_MARKER).read_text())
  except (ValueError, UnicodeDecodeError):
    raise CheckpointError(f"{p / EXPORT_MARKER}: not valid JSON; the export is corrupt") from None
  if meta.get("format_version") != FORMAT_VERSION:
    raise CheckpointError(f"{p / EXPORT_MARKER}: format_version {meta.get('format_version')!r} "
                          f"is not {FORMAT_VERSION}; re-export with this bert_jax version")
  config = _overridden(config_from_json_file(p / "config.json"), config_overrides)
  saved_task = meta.get("task", "pretraining")
  saved_heads = dict(meta.get("head_kwargs", {}))
  if task is None or task == saved_task:
    task, head_kwargs = saved_task, {**saved_heads, **head_kwargs}
  saved_abs = nnx.eval_shape(lambda: create_model(config, saved_task, **saved_heads))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        _params_tree(saved_abs))
  try:
    params = ocp.StandardCheckpointer().restore((p / "params").resolve(), target)
  except Exception as e:  # noqa: BLE001 - orbax raises many types
    raise CheckpointError(f"{p / 'params'}: cannot restore parameters ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}); the export is incomplete, corrupt "
                          "or for another model size") from None
  # Re-use the HF-name machinery to move between tasks (e.g. pretraining -> classification).
  flat = {}
  for e in names_lib.entries(config, saved_task):
    flat[e.hf] = e.tf1_to_hf(e.to_2d(np.asarray(_get_path(params, e.ours))[e.index]))
  src = _Source(str(p / "params"), {k: v.shape for k, v in flat.items()}, flat.__getitem__)
  return _build(config, task, src, "hf", seed, head_kwargs)


# ---- public API -------------------------------------------------------------------------------
def load_pretrained(path, task: str | None = "pretraining", *, config_overrides=None,
                    seed: int = 0, **head_kwargs) -> nnx.Module:
  """Loads a checkpoint directory (HF, google-research/bert or bert_jax export) as `task`.

  task: one of bert_jax.models.families.ALL_TASKS ("pretraining", "masked_lm", "encoder",
    "classification", "token_classification", "question_answering"); None keeps a bert_jax
    export's own task, or an HF directory's (its config.json `architectures`; "pretraining"
    if not one of ours). For ModernBERT "pretraining" means its pretraining model, masked_lm.
  config_overrides: config fields to change (e.g. {"dtype": "bfloat16"}), or a function of the
    checkpoint's config returning them (field names differ between families).
  head_kwargs: e.g. num_labels=3 (inferred from the checkpoint's classifier when present).
  Heads the checkpoint lacks are initialised fresh (with `seed`) and named in a warning.
  """
  if task is not None and task not in families.ALL_TASKS:
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(families.ALL_TASKS)}")
  fmt = detect_format(path)
  p = epath.Path(path)
  overrides = config_overrides
  if fmt == "orbax":
    model = _load_orbax(p, task, overrides, seed, head_kwargs)
  else:
    config, src = _read_hf(p) if fmt == "hf" else _read_tf1(p)
    config = _overridden(config, overrides)
    if task is None:
      task = _hf_task(p, config) if fmt == "hf" else "pretraining"
    model = _build(config, task, src, fmt, seed, head_kwargs)
  folder = p if p.is_dir() else p.parent
  model.vocab_files = tuple(str(folder / f) for f in VOCAB_FILES if (folder / f).exists())
  return model


def _vocab_sources(model, vocab) -> list[epath.Path]:
  if vocab is None:
    return [epath.Path(f) for f in getattr(model, "vocab_files", ())]
  v = epath.Path(vocab)
  if v.is_dir():
    return [v / f for f in VOCAB_FILES if (v / f).exists()]
  if not v.exists():
    raise FileNotFoundError(f"{vocab}: no such vocabulary file (pass vocab.txt, spm.model or "
                            "the directory holding them)")
  return [v]


def _cast(a: np.ndarray, dtype: str | None) -> np.ndarray:
  if dtype in (None, "float32"):
    return a.astype(np.float32)
  if dtype == "bfloat16":
    return a.astype(ml_dtypes.bfloat16)
  if dtype == "float16":
    return a.astype(np.float16)
  raise ValueError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")


def named_tensors(model: nnx.Module, naming: str, dtype: str | None = None) -> dict:
  """Our parameters as HF ("hf") or google-research/bert ("tf1") named numpy tensors."""
  task = _task_of(model)
  params = jax.tree.map(np.asarray, jax.device_get(_params_tree(model)))
  out = {}
  for e in names_lib.entries(model.config, task):
    t = e.to_2d(_get_path(params, e.ours)[e.index])
    if naming == "hf":
      prefix = "model." if model.config.model_type == "modernbert" else "bert."
      name = e.hf.removeprefix(prefix) if task == "encoder" else e.hf
      out[name] = _cast(e.tf1_to_hf(t), dtype)
    else:
      out[e.tf1] = _cast(t, dtype)
  return out


def save_pretrained(model: nnx.Module, path, *, format: str = "hf", vocab=None,  # noqa: A002
                    overwrite: bool = False, dtype: str | None = None,
                    id2label: dict[int, str] | None = None,
                    extra_files: dict[str, str] | None = None) -> epath.Path:
  """Writes `model` to directory `path` in `format` ("hf", "tf1" or "orbax").

  vocab: vocab.txt / spm.model / a directory with them (default: the files the model was loaded
    with). dtype: float32 (default), bfloat16 or float16 weights. extra_files: {name: text}
    written beside (e.g. a README.md model card). The directory appears complete or not at all.
  """
  if format not in FORMATS:
    raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
  out = epath.Path(path)
  if out.exists() and not overwrite:
    raise FileExistsError(f"{path}: already exists; pass overwrite=True (--overwrite) or choose "
                          "another output directory")
  task = _task_of(model)
  if format == "tf1" and model.config.model_type != "bert":
    raise ValueError(f"format 'tf1' (google-research/bert) holds BERT only, not "
                     f"{_FAMILY_NAMES[model.config.model_type]}; use format 'hf' or 'orbax'")
  vocab_files = _vocab_sources(model, vocab)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
  tmp.mkdir()
  try:
    config: ModelConfig = model.config
    num_labels = getattr(model, "num_labels", None)
    if format == "hf":
      if config.model_type == "modernbert":
        outside = [f"{k}={getattr(config, k)}" for k in ("pad_token_id", "cls_token_id",
                                                          "sep_token_id")
                   if not 0 <= getattr(config, k) < config.vocab_size]
        if outside:  # transformers refuses such a config (an embedding padding_idx outside)
          raise ValueError(f"{', '.join(outside)} outside the vocabulary of "
                           f"{config.vocab_size}; set the tokenizer's ids on the config "
                           "(config.replace(pad_token_id=..., cls_token_id=..., "
                           "sep_token_id=...))")
      d = config.to_hf_dict()
      d["architectures"] = [_HF_ARCH[config.model_type][task]]
      if num_labels is not None:
        labels = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
        d["id2label"] = {str(k): v for k, v in labels.items()}
        d["label2id"] = {v: int(k) for k, v in labels.items()}
      (tmp / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
      safetensors_io.save(named_tensors(model, "hf", dtype), str(tmp / "model.safetensors"),
                          metadata={"format": "pt"})
    elif format == "tf1":
      import tensorflow as tf
      tf.config.set_visible_devices([], "GPU")
      (tmp / "bert_config.json").write_text(
          json.dumps(config.to_tf1_dict(), indent=2, sort_keys=True) + "\n")
      tensors = named_tensors(model, "tf1", dtype)
      names = sorted(tensors)
      tf.raw_ops.SaveV2(prefix=str(tmp / "bert_model.ckpt"), tensor_names=names,
                        shape_and_slices=[""] * len(names),
                        tensors=[tf.constant(tensors[n]) for n in names])
    else:
      import orbax.checkpoint as ocp
      head_kwargs = {"num_labels": num_labels} if num_labels is not None else {}
      meta = {"format_version": FORMAT_VERSION, "task": task, "head_kwargs": head_kwargs}
      if id2label:
        meta["id2label"] = {str(k): v for k, v in id2label.items()}
      (tmp / EXPORT_MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
      (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
      params = jax.tree.map(lambda a: _cast(np.asarray(a), dtype),
                            jax.device_get(_params_tree(model)))
      # Host arrays written by this process alone: in a multi-process run the caller saves
      # from one process, and Orbax must not wait for the others at its barriers.
      me = jax.process_index()
      ckptr = ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me}))
      ckptr.save((tmp / "params").resolve(), params)
      ckptr.wait_until_finished()
    for f in vocab_files:
      name = ("spm.model" if f.name.endswith(".model") else
              "tokenizer.json" if f.name.endswith(".json") else "vocab.txt")
      f.copy(tmp / name)
      companion = f.parent / TOKENIZER_CONFIG  # the special tokens' roles, for AutoTokenizer
      if name == "tokenizer.json" and companion.exists():
        companion.copy(tmp / TOKENIZER_CONFIG)
    for name, text in (extra_files or {}).items():
      (tmp / name).write_text(text)
    if out.exists():  # overwrite: move the old one aside first, never leave a half state
      old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
      out.rename(old)
      tmp.rename(out)
      shutil.rmtree(old, ignore_errors=True) if not paths.is_url(old) else old.rmtree()
    else:
      tmp.rename(out)
  except BaseException:
    if tmp.exists():
      tmp.rmtree()
    raise
  return out
