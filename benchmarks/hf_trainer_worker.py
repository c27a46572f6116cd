r"""HF transformers' side of benchmarks/time_to_accuracy.py: `Trainer` + `BertForMaskedLM` to a
held-out MLM accuracy, timed from this process's start.

  python benchmarks/hf_trainer_worker.py SPEC.json

SPEC.json (written by time_to_accuracy.py): the model size, vocab.txt, the exported rows
(`data`: an .npz with the train split's unmasked token ids and the fixed, already masked eval
set), the optimizer, schedule, batch, steps, eval cadence, target, torch threads and `out`,
where this writes its result JSON (atomically, at the end): the eval curve (seconds from process
start, step, accuracy), the time to the target (or why there is none) and a breakdown of where
the time went (imports, data, model, first step, steps/s, evals).

Set up as transformers' examples/pytorch/language-modeling/run_mlm.py sets it up: a
`BertTokenizerFast` from the vocab, rows with `special_tokens_mask` (run_mlm's
`return_special_tokens_mask=True`), `DataCollatorForLanguageModeling(mlm_probability=0.15)`
(80/10/10, padding each batch to its longest row), `Trainer` with AdamW (torch), a linear
schedule with warmup, max_grad_norm, its own eval loop with `preprocess_logits_for_metrics`
(argmax, as run_mlm) and accuracy over the labelled positions. The eval set is not re-masked
(run_mlm masks its eval set anew at every eval): it is our pipeline's fixed masked eval set, so
both trainers are scored on the same predictions. A `TrainerCallback` records each eval and sets
`control.should_training_stop` at the first one reaching the target.

This file imports neither bert_jax nor jax: its process pays only for what HF's side needs.
"""

from __future__ import annotations

import json
import os
import sys
import time


def seconds_since_process_start() -> float:
  """bert_jax.training.loop.seconds_since_process_start's method, copied (importing bert_jax
  would import jax into HF's process): /proc/self/stat's start time against /proc/uptime."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      seconds = float(f.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    if seconds >= 0:
      return seconds
  except (OSError, ValueError, IndexError):
    pass
  return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()
_STARTED = seconds_since_process_start()  # the interpreter's own start-up, before any import


def _write_atomic(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def main(spec_path: str) -> int:
  with open(spec_path) as f:
    spec = json.load(f)
  marks = {"interpreter": _STARTED}
  import numpy as np
  import torch
  torch.set_num_threads(spec["torch_threads"])
  import transformers
  from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast,
                            DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                            TrainingArguments)
  transformers.logging.set_verbosity_warning()
  marks["imports"] = seconds_since_process_start()

  # --- data: the same rows as ours (unmasked train rows; the fixed masked eval set)
  tokenizer = BertTokenizerFast(vocab=spec["vocab"], do_lower_case=True)
  if len(tokenizer) != spec["vocab_size"]:  # transformers 4's vocab_file= would give 5 tokens
    raise RuntimeError(f"tokenizer from {spec['vocab']} has {len(tokenizer)} tokens, expected "
                       f"{spec['vocab_size']}")
  data = np.load(spec["data"])
  ids, offsets = data["train_ids"], data["train_offsets"]
  special = np.array([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])

  class Rows(torch.utils.data.Dataset):
    """The train split's rows as run_mlm's tokenized dataset has them."""

    def __len__(self):
      return len(offsets) - 1

    def __getitem__(self, i):
      row = ids[offsets[i]:offsets[i + 1]]
      return {"input_ids": row.tolist(), "token_type_ids": [0] * len(row),
              "attention_mask": [1] * len(row),
              "special_tokens_mask": np.isin(row, special).astype(int).tolist()}

  eval_ids, eval_labels = data["eval_input_ids"], data["eval_labels"]
  eval_rows = [{"input_ids": eval_ids[i, :n].tolist(), "labels": eval_labels[i, :n].tolist()}
               for i, n in enumerate(data["eval_lengths"])]
  mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=spec["masked_lm_prob"],
                                        seed=spec["seed"])

  def collate(features):
    if "labels" not in features[0]:  # a train batch: HF masks it
      return mlm(features)
    width = max(len(f["input_ids"]) for f in features)  # an eval batch: already masked

    def pad(key, value):
      return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])
    input_ids = pad("input_ids", tokenizer.pad_token_id)
    lengths = torch.tensor([len(f["input_ids"]) for f in features])
    return {"input_ids": input_ids, "labels": pad("labels", -100),
            "attention_mask": (torch.arange(width)[None] < lengths[:, None]).long(),
            "token_type_ids": torch.zeros_like(input_ids)}

  marks["data"] = seconds_since_process_start()

  # --- model: the preset's size, BERT's defaults; gelu_pytorch_tanh = our gelu_new, fused
  m = spec["model"]
  config = BertConfig(vocab_size=spec["vocab_size"], hidden_size=m["hidden_size"],
                      num_hidden_layers=m["num_hidden_layers"],
                      num_attention_heads=m["num_attention_heads"],
                      intermediate_size=m["intermediate_size"], hidden_act="gelu_pytorch_tanh",
                      hidden_dropout_prob=m["hidden_dropout_prob"],
                      attention_probs_dropout_prob=m["attention_probs_dropout_prob"],
                      max_position_embeddings=m["max_position_embeddings"],
                      type_vocab_size=m["type_vocab_size"], pad_token_id=tokenizer.pad_token_id)
  torch.manual_seed(spec["seed"])
  model = BertForMaskedLM(config)
  marks["model"] = seconds_since_process_start()

  o = spec["optimizer"]
  args = TrainingArguments(
      output_dir=spec["output_dir"], seed=spec["seed"],
      per_device_train_batch_size=spec["batch_size"],
      per_device_eval_batch_size=spec["eval_batch_size"], max_steps=spec["max_steps"],
      learning_rate=o["learning_rate"], warmup_steps=o["warmup_steps"],
      lr_scheduler_type="linear", weight_decay=o["weight_decay"], adam_beta1=o["b1"],
      adam_beta2=o["b2"], adam_epsilon=o["eps"], max_grad_norm=o["clip_grad_norm"],
      optim="adamw_torch", eval_strategy="steps", eval_steps=spec["eval_every"],
      logging_strategy="steps", logging_steps=spec["log_every"], save_strategy="no",
      report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
      remove_unused_columns=False)

  def preprocess_logits_for_metrics(logits, labels):  # run_mlm's: keep the argmax only
    if isinstance(logits, tuple):
      logits = logits[0]
    return logits.argmax(dim=-1)

  def compute_metrics(eval_pred):
    preds, labels = eval_pred
    keep = labels != -100
    return {"accuracy": float((preds[keep] == labels[keep]).mean()),
            "predictions": int(keep.sum())}

  curve, step_times, evals = [], {}, []
  reached = {}
  target = spec["target"]

  class Timing(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
      marks["train_begin"] = seconds_since_process_start()

    def on_step_end(self, args, state, control, **kw):
      step_times[state.global_step] = seconds_since_process_start()

    def on_evaluate(self, args, state, control, metrics=None, **kw):
      now = seconds_since_process_start()
      acc = float(metrics["eval_accuracy"])
      before = step_times.get(state.global_step, now)
      curve.append({"seconds": now, "step": state.global_step, "mlm_accuracy": acc,
                    "predictions": metrics.get("eval_predictions")})
      evals.append(now - before)
      print(f"hf eval step {state.global_step} | mlm acc {acc:.4f} | {now:.1f} s from process "
            f"start (eval {now - before:.1f} s)", flush=True)
      if target and acc >= target and not reached:
        reached.update(time_to_target_s=now, target_step=state.global_step, mlm_accuracy=acc)
        print(f"hf target {target:.4f} reached at step {state.global_step} after {now:.1f} s; "
              "stopping", flush=True)
        control.should_training_stop = True

  trainer = Trainer(model=model, args=args, train_dataset=Rows(), eval_dataset=eval_rows,
                    data_collator=collate, compute_metrics=compute_metrics,
                    preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                    callbacks=[Timing()])
  marks["trainer"] = seconds_since_process_start()
  trainer.train()
  marks["train_end"] = seconds_since_process_start()

  # Steps/s between evals: step k's time minus step k-1's, the steps after an eval left out.
  steps = sorted(step_times)
  gaps = [step_times[b] - step_times[a] for a, b in zip(steps, steps[1:])
          if a % spec["eval_every"] != 0]
  result = {
      "trainer": "hf", "reached": bool(reached), **reached,
      "reason": None if reached else (
          f"target {target} not reached in {steps[-1] if steps else 0} steps (best "
          f"{max((c['mlm_accuracy'] for c in curve), default=float('nan')):.4f})"),
      "steps": steps[-1] if steps else 0, "curve": curve,
      "breakdown": {
          "interpreter_s": marks["interpreter"],
          "imports_s": marks["imports"] - marks["interpreter"],
          "data_s": marks["data"] - marks["imports"],
          "model_s": marks["model"] - marks["data"],
          "trainer_setup_s": marks["train_begin"] - marks["model"],
          "first_step_s": step_times[steps[0]] - marks["train_begin"] if steps else None,
          "steps_per_s": len(gaps) / float(sum(gaps)) if gaps else None,
          "num_evals": len(evals), "eval_s_total": float(sum(evals)),
          "eval_s_each": float(np.median(evals)) if evals else None,
          "torch_threads": torch.get_num_threads(),
          "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
      },
  }
  _write_atomic(spec["out"], json.dumps(result, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
