"""Exporting a pretraining run: its checkpoint's parameters as an HF, TF1 or bert_jax model.

The model is the run's: a BertForPreTraining (objective nsp or sop) or, for a run without a
sentence task (objective none), a BertForMaskedLM (HF `BertForMaskedLM`: no pooler, no NSP),
told apart by the checkpoint's parameters; for a ModernBERT preset a ModernBertForMaskedLM,
whose config takes the special-token ids (pad, cls, sep) of the run's vocabulary.

What `python -m bert_jax.export` does (see that module for the command line): reading a run
(WORKDIR/config.json, a partial Orbax restore of the parameters onto one CPU device), a model
card, and `bert_jax.save_pretrained`. Fine-tuning reuses `run_config`, `pretrained_model` and
`run_vocab` to start from a pretraining WORKDIR.
"""

from __future__ import annotations

import json

import jax
import ml_collections
from etils import epath
from flax import nnx

from bert_jax.errors import UserError
from bert_jax.text import tokenization
from bert_jax.models import families
from bert_jax.models.config import ModelConfig
from bert_jax.training.checkpointing import DataIteratorHandler, orbax_path
from bert_jax.training.config import model_config

FORMATS = ("hf", "tf1", "orbax")


class ExportError(UserError):
  """A problem the user fixes (paths, steps, flags); printed as one line."""


# ---- reading a training run -------------------------------------------------------------------
def run_config(workdir) -> ml_collections.ConfigDict:
  """The run's resolved config (WORKDIR/config.json, written by bert_jax.train)."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise ExportError(f"{path}: missing; --workdir must be a bert_jax.train work directory")
  try:
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
  except ValueError as e:
    raise ExportError(f"{path}: not valid JSON ({e})") from None
  missing = [k for k in ("model", "data", "train", "optimizer") if k not in config]
  if missing:
    raise ExportError(f"{path}: no {', '.join(missing)} section; not a bert_jax.train config")
  return config


def _manager(workdir):
  import orbax.checkpoint as ocp
  directory = epath.Path(workdir) / "checkpoints"
  if not directory.exists():
    raise ExportError(f"no checkpoint in {workdir}: {directory} does not exist; train first "
                      "(python -m bert_jax.train --workdir=...)")
  options = ocp.CheckpointManagerOptions(create=False, max_to_keep=None)  # never deletes
  return ocp.CheckpointManager(orbax_path(directory), options=options,
                               item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                              "data": DataIteratorHandler()})


def resolve_step(manager, workdir, step: int | None) -> int:
  steps = sorted(manager.all_steps())
  if not steps:
    raise ExportError(f"no checkpoint in {workdir}: {epath.Path(workdir) / 'checkpoints'} holds "
                      "no finished step")
  if step is None:
    return steps[-1]
  if step not in steps:
    raise ExportError(f"--step={step}: no checkpoint at that step in {workdir}; available: "
                      f"{', '.join(map(str, steps))}")
  return step


def params_task(params) -> str:
  """The task name of a pretraining run's parameter tree: "pretraining" (it has the NSP
  head: objective nsp or sop) or "masked_lm" (objective none; every ModernBERT run)."""
  return "pretraining" if "nsp" in params else "masked_lm"


# Where each family's token embedding table lives in a pretraining model's parameters.
_EMBEDDING = {"bert": ("bert", "embeddings", "word_embeddings", "embedding"),
              "modernbert": ("model", "embeddings", "tok_embeddings", "embedding")}


def _saved_model(manager, step: int) -> tuple[int, str]:
  """(vocab_size, model task) of a checkpoint's parameters, from its metadata."""
  tree = manager.item_metadata(step)["state"]
  tree = getattr(tree, "tree", tree)
  for path in _EMBEDDING.values():
    try:
      params = tree["params"]
      table = params
      for k in path:
        table = table[k]
      return int(table.shape[0]), params_task(params)
    except (KeyError, TypeError):
      continue
  raise ExportError(f"checkpoint step {step}: no params/bert/embeddings (or params/model/"
                    "embeddings) in its state; not a bert_jax.train checkpoint")


def run_model_config(config: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
  """The run's architecture (preset + model overrides) with float32 defaults for execution."""
  try:
    bcfg = model_config(config.model, vocab_size)
  except (UserError, KeyError) as e:
    raise ExportError(f"config.json: {e}") from None
  return bcfg.replace(dtype="float32", remat_policy="none", attention_impl="auto")


def restore_params(workdir, step: int | None = None) -> tuple[dict, int, ModelConfig]:
  """(params of the run's model, a BertForPreTraining or BertForMaskedLM (`params_task`), as
  nested dicts of jax.Arrays on one CPU device, the step, the model config). Reads only the
  `params` subtree of the checkpoint's train state."""
  import orbax.checkpoint as ocp
  manager = _manager(workdir)
  try:
    config = run_config(workdir)
    step = resolve_step(manager, workdir, step)
    vocab_size, task = _saved_model(manager, step)
    bcfg = run_model_config(config, vocab_size)
    abstract = nnx.to_pure_dict(nnx.state(
        nnx.eval_shape(lambda: families.create_model(bcfg, task)), nnx.Param))
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    item = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), abstract)
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=cpu, global_shape=x.shape, dtype=x.dtype),
        abstract)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item={"params": item}, restore_args={"params": restore_args}, partial_restore=True)))
    except (ValueError, KeyError) as e:
      raise ExportError(f"checkpoint step {step} in {workdir} does not match its config.json "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
  finally:
    manager.close()
  return restored["state"]["params"], step, bcfg


def pretrained_model(workdir, step: int | None = None) -> tuple[nnx.Module, int]:
  """The run's model (BertForPreTraining, or BertForMaskedLM for objective none) holding the
  checkpoint's parameters, and the step."""
  params, step, bcfg = restore_params(workdir, step)
  task = params_task(params)
  if bcfg.model_type == "modernbert":
    vocab = run_vocab(run_config(workdir))
    if vocab is not None and epath.Path(vocab).exists():
      bcfg = with_special_ids(bcfg, tokenization.Tokenizer.from_file(vocab))
  model = nnx.eval_shape(lambda: families.create_model(bcfg, task))
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model, step


def with_special_ids(bcfg: ModelConfig, tokenizer) -> ModelConfig:
  """A ModernBERT config carrying the vocabulary's pad / cls / sep ids (HF's config.json
  needs them inside the vocabulary: ModernBERT's defaults are its own 50283 / 50281 / 50282)."""
  return bcfg.replace(pad_token_id=tokenizer.pad_id, cls_token_id=tokenizer.cls_id,
                      bos_token_id=tokenizer.cls_id, sep_token_id=tokenizer.sep_id,
                      eos_token_id=tokenizer.sep_id)


def run_vocab(config: ml_collections.ConfigDict) -> str | None:
  """The run's vocabulary file (the dataset's own copy), or None (synthetic data, moved data)."""
  if config.data.get("source") != "tfds" or not config.data.get("data_dir"):
    return None
  from bert_jax.data import input_pipeline
  try:
    return input_pipeline.dataset_info(config.data.data_dir, config.data.dataset or None).get(
        "vocab_path")
  except (FileNotFoundError, ValueError):
    return None


def _vocab_lines(path: str) -> int:
  if path.endswith(".json"):
    return tokenization.Tokenizer.from_file(path).vocab_size
  if path.endswith(".model"):
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_proto=epath.Path(path).read_bytes()).get_piece_size()
  return len(tokenization.read_vocab(path))


def last_eval(workdir, step: int) -> dict:
  """The newest eval record of metrics.jsonl at or before `step` ({} if none)."""
  path = epath.Path(workdir) / "metrics.jsonl"
  best: dict = {}
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except ValueError:
        continue  # a line cut by a crash
      if record.get("kind") == "eval" and record.get("step", -1) <= step and record.get(
          "step", -1) >= best.get("step", -1):
        best = record
  return best


# ---- model card -------------------------------------------------------------------------------
_OBJECTIVE_TEXT = {"nsp": "Masked-LM + next-sentence-prediction pretraining",
                   "sop": "Masked-LM + sentence-order-prediction (ALBERT's SOP) pretraining",
                   "none": "Masked-LM pretraining (no sentence-pair task)"}


def model_card(config, bcfg: ModelConfig, workdir, step: int, fmt: str, dtype: str | None,
               metrics: dict, task: str = "pretraining") -> str:
  """task: the exported model's (export's `params_task`); the objective is the run's
  data.objective (config.json records the dataset's), else what `task` implies."""
  t, o, d = config.train, config.optimizer, config.data
  objective = d.get("objective", "") or ("none" if task == "masked_lm" else "nsp")
  rows = [
      ("architecture", f"preset `{config.model.preset}`: {bcfg.num_hidden_layers} layers, hidden "
       f"{bcfg.hidden_size}, {bcfg.num_attention_heads} heads, intermediate "
       f"{bcfg.intermediate_size}, vocab {bcfg.vocab_size}, {bcfg.max_position_embeddings} "
       f"positions, `{bcfg.hidden_act}`"),
      ("data", f"`{d.get('data_dir', '')}` ({d.get('source', '')}), sequence length "
       f"{d.get('seq_len')}, {d.get('max_predictions_per_seq')} masked positions, objective "
       f"`{objective}`"),
      ("training", f"step {step} of {t.num_steps}, global batch {t.batch_size}, "
       f"{o.name} lr {o.learning_rate:g} (warmup {o.warmup_steps}, {o.decay} decay), weight "
       f"decay {o.weight_decay:g}, {config.model.dtype} compute"),
      ("source", f"`{workdir}` checkpoint {step}"),
      ("weights", f"{fmt}, {dtype or 'float32'}"),
  ]
  family = "ModernBERT" if bcfg.model_type == "modernbert" else "BERT"
  lines = [f"# {family} pretrained with bert_jax", "",
           f"{_OBJECTIVE_TEXT.get(objective, _OBJECTIVE_TEXT['nsp'])}; exported by "
           "`python -m bert_jax.export`.", "", "| | |", "|---|---|"]
  lines += [f"| {k} | {v} |" for k, v in rows]
  lines += ["", f"## Eval metrics (step {metrics.get('step', '-')})", ""]
  scalars = {k: v for k, v in metrics.items() if k not in ("kind", "step")}
  if scalars:
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) and not v.is_integer() else
              f"| {k} | {v:g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in scalars.items()]
  else:
    lines.append("none logged at or before this step")
  hf_class = ("ModernBertForMaskedLM" if bcfg.model_type == "modernbert" else
              "BertForMaskedLM" if task == "masked_lm" else "BertForPreTraining")
  load = {"hf": f"transformers.{hf_class}.from_pretrained(PATH)",
          "tf1": "google-research/bert: --init_checkpoint=PATH/bert_model.ckpt "
                 "--bert_config_file=PATH/bert_config.json --vocab_file=PATH/vocab.txt",
          "orbax": "bert_jax.load_pretrained(PATH, task=...)"}[fmt]
  lines += ["", "## Load", "", f"    {load}", "",
            "Fine-tune: `python -m bert_jax.finetune --config=configs/finetune/<task>.py "
            "--config.init_from=PATH`", ""]
  return "\n".join(lines)


# ---- export -----------------------------------------------------------------------------------
def export(workdir, output_dir, *, format: str = "hf", step: int | None = None,  # noqa: A002
           overwrite: bool = False, dtype: str | None = None, vocab: str | None = None):
  """Writes the checkpoint's parameters to output_dir; returns (path, step)."""
  from bert_jax.interop import save_pretrained
  if format not in FORMATS:
    raise ExportError(f"--format={format!r} is not one of {', '.join(FORMATS)}")
  if dtype not in (None, "float32", "bfloat16"):
    raise ExportError(f"--dtype={dtype!r} is not one of float32, bfloat16")
  if epath.Path(output_dir).exists() and not overwrite:
    raise ExportError(f"--output_dir={output_dir} already exists; pass --overwrite to replace it "
                      "or choose another directory")
  manager = _manager(workdir)
  try:  # "no checkpoint" / "no such step" before anything else
    step = resolve_step(manager, workdir, step)
  finally:
    manager.close()
  config = run_config(workdir)
  vocab = vocab or run_vocab(config)
  if vocab is None and config.data.get("source") == "tfds":
    raise ExportError(f"the run's dataset (data.data_dir={config.data.get('data_dir')!r} in "
                      f"{epath.Path(workdir) / 'config.json'}) is not readable here; pass "
                      "--vocab=PATH/vocab.txt (or spm.model) to export with it")
  if vocab is not None and not epath.Path(vocab).exists():
    raise ExportError(f"--vocab={vocab}: no such file")
  model, step = pretrained_model(workdir, step)
  if format == "tf1" and model.config.model_type != "bert":
    raise ExportError("--format=tf1 (google-research/bert) holds BERT only; export this "
                      f"{model.config.model_type} run with --format=hf or --format=orbax")
  if vocab is not None and _vocab_lines(vocab) != model.config.vocab_size:
    raise ExportError(f"--vocab={vocab} has {_vocab_lines(vocab)} tokens but the checkpoint's "
                      f"vocab_size is {model.config.vocab_size}; pass the run's own vocabulary")
  card = model_card(config, model.config, workdir, step, format, dtype,
                    last_eval(workdir, step),
                    families.task_of(model))
  try:
    path = save_pretrained(model, output_dir, format=format, vocab=vocab, overwrite=overwrite,
                           dtype=dtype, extra_files={"README.md": card})
  except FileExistsError as e:  # created meanwhile
    raise ExportError(str(e)) from None
  return path, step
