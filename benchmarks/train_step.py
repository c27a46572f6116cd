r"""One full BERT pretraining step (forward, backward, optimizer update): ours vs the peers.

  python benchmarks/train_step.py --model=base --seq_len=128 --batch_size=8 --dtype=float32 \
      [--peers] [--json]

"ours" is the exact jitted, sharded, donated step `bert_jax.train` runs (pretraining.build), with
AdamW (optax, eps 1e-6, wd 0.01) so every framework runs the same optimizer. --peers adds, in the
same invocation and on the same shapes:
  torch      HF transformers PyTorch BertForPreTraining + torch.optim.AdamW (labels as HF takes
             them: -100 on unmasked positions; MLM logits over all positions, as HF computes)
  hf_flax    HF FlaxBertForPreTraining (transformers<5, in its own virtualenv .venv-hf-flax,
             created on first use) + optax.adamw, integer-label loss on the masked positions
  plain_jax  a hand-written JAX BERT step (benchmarks/plain_jax_bert.py): gathered MLM, fused QKV,
             scan over layers, optax.adamw -- the "no framework tax" reference
Each runs in its own subprocess (clean peak-RSS numbers). MFU = model FLOPs per token
(docs/formulas.md section 1, gathered MLM: `bert_jax.models.flops.flops_per_token`) x tokens/s /
the fp32 2048^3 matmul rate measured in this run (best of 10) on CPU; on GPU/TPU over the chip's
dense bf16 datasheet peak (`bert_jax.models.flops.peak_flops`).
Peak memory = the process's peak RSS above its RSS after imports on CPU; the device's peak
bytes in use with --device=gpu (JAX's memory_stats, torch.cuda.max_memory_allocated).
--device=gpu runs ours, plain_jax and torch on the first GPU (JAX_PLATFORMS=cuda; torch with
.cuda() and CUDA autocast for bf16); hf_flax stays CPU-only (its virtualenv has a CPU jax).
"ours" (and the matmul
peak) run in the process environment `python -m bert_jax.train` gives itself (glibc's
huge-page tunable, bert_jax/cli.py); the peers run as they start by default, or in
the same environment with --peers_huge_pages. With --json the
last line is one JSON object.

ModernBERT (--model=modernbert_tiny|modernbert_base|modernbert_large: any preset of
bert_jax.models.PRESETS, the family from its model_type):
  python benchmarks/train_step.py --model=modernbert_base --seq_len=1024 --batch_size=2 \
      [--peers] [--json]
"ours" is the same jitted step with the recipe's run config (configs/<model>.py, else
configs/modernbert_base.py with the preset swapped in): objective none (masked LM only),
StableAdamW (optax, optimizer.name=stable_adamw, decouple_lr, b2 0.98, wd 1e-5), attention
dropout 0, --max_predictions default 30% of seq_len rounded up (308 at 1024), on
pretraining.synthetic_batch rows (unpadded, unpacked). Its peers, HF transformers PyTorch
ModernBertForMaskedLM built from the same model config (to_hf_dict), on the same batch (labels
-100 except at the same masked positions), with optimi's StableAdamW (same hyperparameters,
decouple_lr, no decay on biases and norms) when `optimi` (torch-optimi, the hf extra) is
importable, else torch.optim.AdamW (the table says which):
  torch              attn_implementation="sdpa", sparse_prediction=True (head and decoder on the
                     masked positions only, as ours), eager PyTorch
  torch_eager_attn   attn_implementation="eager" (explicit softmax attention), sparse
  torch_full_logits  sdpa, sparse_prediction=False (logits over all positions)
  torch_compile      sdpa, sparse, the model under torch.compile (inductor; the first call,
                     compile included, is its "compile s")
--peers runs torch, torch_eager_attn and torch_full_logits; --only picks any of these.
MFU uses ModernBERT's FLOPs per token (docs/formulas.md section 1b) for every row.

Attention kernel (both families): --attention_impl=auto|xla|cudnn|splash|manual sets ours'
model.attention_impl (bert_jax/models/attention.py; default auto). A comma-separated list, e.g.
  python benchmarks/train_step.py --device=gpu --model=base --seq_len=512 --batch_size=32 \
      --dtype=bfloat16 --attention_impl=cudnn,xla --only=ours,torch --json
runs ours once per kernel in the same invocation (rows ours[cudnn], ours[xla]; ours/x is then
over the first of them, x/torch over the torch row) and prints the attention path each row
actually ran (attention.describe on its device). The fused kernels (xla, cudnn, splash) have no
attention-probability dropout, so with one of them in the list, or more than one kernel, every
row runs with attention dropout 0: BERT's preset 0.1 is set to 0 for ours and for the HF peers
built from the same config (plain_jax keeps its own 0.1; the output says so). A kernel this
device or shape cannot run (cudnn off an NVIDIA GPU or in float32, splash off TPU) ends the run
with the library's one-line error before anything is timed. --keep_going records a worker that
fails (out of memory, a torch without CUDA) as a failed row and goes on with the others.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time

import repo_configs  # benchmarks/repo_configs.py (standard library only: hf_flax imports it too)

FLAX_VENV = os.path.join(repo_configs.REPO, ".venv-hf-flax")


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _jax_device_peak_bytes() -> int | None:
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _first_device(args):
  """JAX's first device, checked against --device (JAX's own error for a missing CUDA plugin
  is a bare AssertionError)."""
  import jax
  try:
    device = jax.devices()[0]
  except Exception as e:  # noqa: BLE001
    why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    raise SystemExit(f"JAX found no {args.device.upper()} ({why}; is the gpu extra, "
                     "jax[cuda12], installed?)") from None
  if args.device == "gpu" and device.platform != "gpu":
    raise SystemExit(f"--device=gpu but JAX runs on {device.platform}")
  return device


def _time(step, n_warmup: int, n_steps: int) -> tuple[float, list[float]]:
  """(first-call seconds, timed step seconds): `step()` must block until done."""
  t = time.perf_counter()
  step()
  first = time.perf_counter() - t
  for _ in range(n_warmup - 1):
    step()
  times = []
  for _ in range(n_steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  return first, times


def _batch(args, vocab: int):
  """The step's batch in numpy (no bert_jax: the hf_flax worker runs where it is not installed)."""
  import numpy as np
  rng = np.random.default_rng(0)
  b, l, p = args.batch_size, args.seq_len, args.max_predictions
  ids = rng.integers(5, vocab, (b, l)).astype(np.int32)
  positions = np.sort(np.argsort(rng.random((b, l - 1)), axis=-1)[:, :p] + 1, axis=-1)
  targets = np.take_along_axis(ids, positions, axis=1)
  masked = ids.copy()
  np.put_along_axis(masked, positions, 4, axis=1)
  return {"input_ids": masked, "token_type_ids": (np.arange(l)[None] >= l // 2).astype(
              np.int32).repeat(b, 0),
          "attention_mask": np.ones((b, l), np.int32), "masked_positions": positions.astype(
              np.int32), "masked_ids": targets.astype(np.int32),
          "masked_weights": np.ones((b, p), np.float32),
          "next_sentence_label": rng.integers(0, 2, (b,)).astype(np.int32)}


def _family(model: str) -> str:
  """"bert" | "modernbert": the preset's model_type (bert_jax needed: not in the hf_flax venv)."""
  from bert_jax import get_config
  return get_config(model).model_type


def _set_attention(c, args, impl: str):
  """The run config's attention settings: attention_impl `impl`; attention dropout
  --attention_dropout where the parent set it (0 with a fused kernel or several kernels)."""
  c.model.attention_impl = impl
  if args.attention_dropout is not None:
    c.model.attention_probs_dropout_prob = args.attention_dropout
  return c


def _bert_run_config(args, impl: str = "auto"):
  """BERT's run config at the benchmark's shapes: configs/default.py with the preset, AdamW."""
  c = repo_configs.load("default")
  c.model.preset = args.model
  c.model.dtype = args.dtype
  c.model.scan_layers = args.scan
  c.model.remat_policy = args.remat
  c.data.seq_len, c.data.max_predictions_per_seq = args.seq_len, args.max_predictions
  c.train.batch_size = args.batch_size
  c.optimizer.name, c.optimizer.learning_rate = "adamw", 1e-4
  return _set_attention(c, args, impl)


def _modernbert_run_config(args, impl: str = "auto"):
  """The ModernBERT recipe's run config at the benchmark's shapes: configs/<model>.py where it
  exists, else configs/modernbert_base.py with the preset swapped in."""
  name = args.model if os.path.exists(repo_configs.path(args.model)) else "modernbert_base"
  c = repo_configs.load(name)
  c.model.preset = args.model
  c.model.dtype = args.dtype
  c.model.scan_layers = args.scan
  c.model.remat_policy = args.remat
  c.data.seq_len, c.data.max_predictions_per_seq = args.seq_len, args.max_predictions
  c.data.pack = False  # synthetic rows: unpadded, one sequence each
  c.data.objective = "none"
  c.train.batch_size = args.batch_size
  c.train.grad_accum_steps = 1
  return _set_attention(c, args, impl)


def _model_config(args, impl: str = "auto"):
  """The model config ours trains (training/config.py's one mapping from the run config)."""
  from bert_jax import get_config
  from bert_jax.training import config as run_config
  if _family(args.model) == "modernbert":
    return run_config.model_config(_modernbert_run_config(args, impl).model,
                                   get_config(args.model).vocab_size)
  return run_config.model_config(_bert_run_config(args, impl).model, 30522)


def _attention_path(args, model_config, backend: str) -> str:
  """attention.describe for ours' model config on `backend`, or the library's one-line error
  (a fused kernel this backend, dtype or length cannot run) as this process's exit."""
  from bert_jax.models import attention
  try:
    return attention.describe(model_config, backend=backend, seq_len=args.seq_len)
  except ValueError as e:
    raise SystemExit(f"error: --attention_impl={model_config.attention_impl}: {e}") from None


# ---- workers (one per subprocess) -------------------------------------------------------------
def worker_ours(args) -> dict:
  if _family(args.model) == "modernbert":
    return worker_ours_modernbert(args)
  import jax
  from bert_jax.models import attention
  from bert_jax.parallel import sharding
  from bert_jax.training import pretraining
  from bert_jax.training import train_state
  base_rss = _rss_mb()
  c = _bert_run_config(args, args.attention_impl)
  device = _first_device(args)
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  t = time.perf_counter()
  setup = pretraining.build(c, mesh, 30522)
  mcfg = setup.bert_config
  path = _attention_path(args, mcfg, attention.backend_of(device))
  state = setup.init_state(jax.random.key(0))
  batch = train_state.global_batch(_batch(args, 30522), setup.batch_sharding)
  return {**_time_compiled(args, setup, state, batch, t, base_rss),
          "device_peak_bytes": _jax_device_peak_bytes(),
          "attention": path, "attention_dropout": mcfg.attention_probs_dropout_prob,
          "what": f"bert_jax step, {mcfg.dtype}, adamw (optax), attention {path}, attention "
                  f"dropout {mcfg.attention_probs_dropout_prob:g}",
          "version": f"jax {jax.__version__}"}


def _time_compiled(args, setup, state, batch, t: float, base_rss: float) -> dict:
  """Compiles `setup`'s train step for `batch` (compile_s counted from `t`, when the build
  began), times it over args.warmup + args.steps steps, and returns the fields both of our
  workers report: compile_s, times, RSS, device, XLA's step bytes, flops_per_token."""
  import jax
  compiled = setup.train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  box = [state]

  def step():
    box[0], metrics = compiled(box[0], batch)
    jax.block_until_ready(metrics)

  _, times = _time(step, args.warmup, args.steps)
  return {"compile_s": compile_s, "times": times, "base_rss_mb": base_rss,
          "peak_rss_mb": _peak_rss_mb(), "device": jax.devices()[0].device_kind,
          "xla_step_bytes": mem.argument_size_in_bytes + mem.output_size_in_bytes
          - mem.alias_size_in_bytes + mem.temp_size_in_bytes,
          "flops_per_token": setup.flops_per_token}


def worker_ours_modernbert(args) -> dict:
  """Our ModernBERT step: objective none, the recipe's StableAdamW, synthetic unpacked rows."""
  import jax
  from bert_jax.models import attention
  from bert_jax.parallel import sharding
  from bert_jax.training import pretraining
  from bert_jax.training import train_state
  base_rss = _rss_mb()
  c = _modernbert_run_config(args, args.attention_impl)
  vocab = _model_config(args).vocab_size
  device = _first_device(args)
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  t = time.perf_counter()
  setup = pretraining.build(c, mesh, vocab, objective="none")
  mcfg = setup.bert_config
  path = _attention_path(args, mcfg, attention.backend_of(device))
  state = setup.init_state(jax.random.key(0))
  batch = train_state.global_batch(
      pretraining.synthetic_batch(args.batch_size, args.seq_len, args.max_predictions, vocab,
                                  seed=0), setup.batch_sharding)
  o = c.optimizer
  return {**_time_compiled(args, setup, state, batch, t, base_rss),
          "device_peak_bytes": _jax_device_peak_bytes(),
          "attention": path, "attention_dropout": mcfg.attention_dropout,
          "what": f"bert_jax step, {mcfg.dtype}, {o.name} (optax; decouple_lr="
                  f"{o.decouple_lr}, b2 {o.b2}, wd {o.weight_decay}), attention {path}"
                  f", attention dropout {mcfg.attention_dropout}, logits at masked positions",
          "version": f"jax {jax.__version__}"}


def worker_plain_jax(args) -> dict:
  import jax
  import plain_jax_bert  # benchmarks/plain_jax_bert.py
  base_rss = _rss_mb()
  _first_device(args)
  t = time.perf_counter()
  step_fn, state = plain_jax_bert.make(args.model, args.dtype, 30522)
  batch = jax.device_put(_batch(args, 30522))
  compiled = jax.jit(step_fn, donate_argnums=0).lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  box = [state]

  def step():
    box[0], loss = compiled(box[0], batch)
    jax.block_until_ready(loss)

  _, times = _time(step, args.warmup, args.steps)
  return {"compile_s": compile_s, "times": times, "base_rss_mb": base_rss,
          "peak_rss_mb": _peak_rss_mb(), "device_peak_bytes": _jax_device_peak_bytes()}


def _torch_device(args) -> str:
  """'cuda' with --device=gpu (checked: torch sees a CUDA device), else 'cpu'."""
  import torch
  dev = "cuda" if args.device == "gpu" else "cpu"
  if dev == "cuda" and not torch.cuda.is_available():
    raise SystemExit("--device=gpu but torch sees no CUDA device (a CPU-only torch build?)")
  return dev


def _time_torch(forward, inputs: dict, opt, dev: str, args, base_rss: float) -> dict:
  """The torch peers' timed loop: one training step (zero_grad, forward(**inputs).loss under
  CUDA/CPU bf16 autocast with --dtype=bfloat16, backward, opt.step, a CUDA synchronize) timed by
  `_time` (--warmup untimed, --steps timed; the first call is the row's "compile s"), and the
  result fields every torch worker reports."""
  import torch
  import transformers
  use_bf16 = args.dtype == "bfloat16"

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=use_bf16):
      loss = forward(**inputs).loss
    loss.backward()
    opt.step()
    if dev == "cuda":
      torch.cuda.synchronize()

  first, times = _time(step, args.warmup, args.steps)
  return {"compile_s": first, "times": times, "base_rss_mb": base_rss,
          "peak_rss_mb": _peak_rss_mb(), "version": f"torch {torch.__version__}, "
          f"transformers {transformers.__version__}", "threads": torch.get_num_threads(),
          "device_peak_bytes": torch.cuda.max_memory_allocated() if dev == "cuda" else None}


def worker_torch(args) -> dict:
  if _family(args.model) == "modernbert":
    return worker_torch_modernbert(args, **TORCH_MODERNBERT["torch"])
  import numpy as np
  import torch
  import transformers
  base_rss = _rss_mb()
  dev = _torch_device(args)
  cfg = transformers.BertConfig(**json.loads(args.hf_config))
  model = transformers.BertForPreTraining(cfg).train().to(dev)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
  b = _batch(args, 30522)
  labels = np.full(b["input_ids"].shape, -100, np.int64)
  np.put_along_axis(labels, b["masked_positions"], b["masked_ids"], axis=1)
  inputs = {"input_ids": torch.tensor(b["input_ids"], dtype=torch.long),
            "token_type_ids": torch.tensor(b["token_type_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(b["attention_mask"], dtype=torch.long),
            "labels": torch.tensor(labels),
            "next_sentence_label": torch.tensor(b["next_sentence_label"], dtype=torch.long)}
  inputs = {k: v.to(dev) for k, v in inputs.items()}
  return _time_torch(model, inputs, opt, dev, args, base_rss)


# ModernBERT's torch peers: worker name -> how HF's ModernBertForMaskedLM runs.
TORCH_MODERNBERT = {
    "torch": {"attn": "sdpa", "sparse": True, "compiled": False},
    "torch_eager_attn": {"attn": "eager", "sparse": True, "compiled": False},
    "torch_full_logits": {"attn": "sdpa", "sparse": False, "compiled": False},
    "torch_compile": {"attn": "sdpa", "sparse": True, "compiled": True},
}


def _torch_stable_adamw(model, o):
  """optimi's StableAdamW with the run config's settings (no decay on biases and norms, as
  ModernBERT's filter_bias_norm_wd and our weight_decay_mask), or torch's AdamW without it."""
  import torch
  decay, no_decay = [], []
  for name, p in model.named_parameters():  # tied decoder.weight is listed once
    (no_decay if name.endswith("bias") or "norm" in name else decay).append(p)
  groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
  try:
    import optimi
  except ImportError:
    return (torch.optim.AdamW(groups, lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
                              weight_decay=o.weight_decay),
            "torch.optim.AdamW (optimi not installed: NOT the same optimizer)")
  return (optimi.StableAdamW(groups, lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
                             weight_decay=o.weight_decay, decouple_lr=o.decouple_lr,
                             max_lr=o.learning_rate if o.decouple_lr else None),
          f"optimi {getattr(optimi, '__version__', '?')} StableAdamW (decouple_lr="
          f"{o.decouple_lr})")


def worker_torch_modernbert(args, attn: str, sparse: bool, compiled: bool) -> dict:
  """HF ModernBertForMaskedLM on our model config and batch, with the recipe's optimizer."""
  import numpy as np
  import torch
  import transformers
  from bert_jax.training import pretraining
  base_rss = _rss_mb()
  torch.set_num_threads(os.cpu_count())
  dev = _torch_device(args)
  d = json.loads(args.hf_config)
  for key, fallback in (("pad_token_id", 0), ("bos_token_id", 1), ("eos_token_id", 2),
                        ("cls_token_id", 1), ("sep_token_id", 2)):
    if d.get(key) is None or d[key] >= d["vocab_size"]:  # special ids inside the vocabulary
      d[key] = fallback
  cfg = transformers.ModernBertConfig(**d, attn_implementation=attn, sparse_prediction=sparse)
  model = transformers.ModernBertForMaskedLM(cfg).train().to(dev)
  assert model.config._attn_implementation == attn, model.config._attn_implementation
  opt, opt_name = _torch_stable_adamw(model, _modernbert_run_config(args).optimizer)
  b = pretraining.synthetic_batch(args.batch_size, args.seq_len, args.max_predictions,
                                  d["vocab_size"], seed=0)
  labels = np.full(b["input_ids"].shape, -100, np.int64)
  np.put_along_axis(labels, b["masked_positions"], b["masked_ids"], axis=1)
  inputs = {"input_ids": torch.tensor(b["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(b["attention_mask"], dtype=torch.long),
            "labels": torch.tensor(labels)}
  inputs = {k: v.to(dev) for k, v in inputs.items()}
  forward = torch.compile(model) if compiled else model
  out = _time_torch(forward, inputs, opt, dev, args, base_rss)
  dtype = "float32" + (" + bf16 autocast" if args.dtype == "bfloat16" else "")
  out["what"] = (f"HF ModernBertForMaskedLM, {dtype}, {opt_name}, attn_implementation={attn}, "
                 f"sparse_prediction={sparse}, " + ("torch.compile" if compiled else
                                                    "eager PyTorch")
                 + f", {torch.get_num_threads()} threads")
  return out


def worker_hf_flax(args) -> dict:
  import jax
  import jax.numpy as jnp
  import optax
  import transformers
  base_rss = _rss_mb()
  cfg = transformers.BertConfig(**json.loads(args.hf_config))
  model = transformers.FlaxBertForPreTraining(cfg, seed=0, dtype=getattr(jnp, args.dtype))
  tx = optax.adamw(1e-4, eps=1e-6, weight_decay=0.01)
  params = model.params
  state = (params, tx.init(params))
  b = _batch(args, 30522)

  def train_step(state, b, rng):
    params, opt_state = state

    def loss_fn(params):
      out = model(b["input_ids"], attention_mask=b["attention_mask"],
                  token_type_ids=b["token_type_ids"], params=params, dropout_rng=rng, train=True)
      logits = jnp.take_along_axis(out.prediction_logits, b["masked_positions"][..., None],
                                   axis=1)  # HF computes all positions; the loss uses the masked
      nll = optax.softmax_cross_entropy_with_integer_labels(logits, b["masked_ids"])
      w = b["masked_weights"]
      mlm = jnp.sum(nll * w) / (jnp.sum(w) + 1e-5)
      nsp = optax.softmax_cross_entropy_with_integer_labels(out.seq_relationship_logits,
                                                            b["next_sentence_label"]).mean()
      return mlm + nsp

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  t = time.perf_counter()
  batch = jax.device_put(b)
  rng = jax.random.key(0)
  compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t
  box = [state]

  def step():
    box[0], loss = compiled(box[0], batch, rng)
    jax.block_until_ready(loss)

  _, times = _time(step, args.warmup, args.steps)
  return {"compile_s": compile_s, "times": times, "base_rss_mb": base_rss,
          "peak_rss_mb": _peak_rss_mb(), "version": f"transformers {transformers.__version__}, "
          f"jax {jax.__version__}"}


def worker_peak(args) -> dict:
  from bert_jax.models import flops
  device = _first_device(args)
  if device.platform == "cpu":  # measured here, best of 10
    return {"peak_flops": flops.measure_matmul_peak(2048, repeats=10),
            "peak_how": "fp32 2048^3 matmul peak (measured)"}
  peak, how = flops.peak_flops([device])  # GPU/TPU: the chip's dense bf16 datasheet peak
  return {"peak_flops": peak, "peak_how": how}


WORKERS = {"ours": worker_ours, "plain_jax": worker_plain_jax, "torch": worker_torch,
           "hf_flax": worker_hf_flax, "peak": worker_peak}
WORKERS.update({name: functools.partial(worker_torch_modernbert, **how)
                for name, how in TORCH_MODERNBERT.items() if name != "torch"})
BERT_PEERS = ("torch", "hf_flax", "plain_jax")
MODERNBERT_PEERS = tuple(TORCH_MODERNBERT)


# ---- orchestration ----------------------------------------------------------------------------
def _ensure_flax_venv() -> str:
  py = os.path.join(FLAX_VENV, "bin", "python")
  if not os.path.exists(os.path.join(FLAX_VENV, ".ready")):
    print(f"creating {FLAX_VENV} (transformers<5 for FlaxBertForPreTraining)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", FLAX_VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "jax==0.10.2", "jaxlib==0.10.2",
                    "flax==0.12.8", "optax==0.2.8", "transformers>=4.57,<5", "numpy<2.5"],
                   check=True)
    open(os.path.join(FLAX_VENV, ".ready"), "w").close()
  return py


def host_environ(env: dict) -> dict:
  """The process environment `python -m bert_jax.train` runs in (it re-executes itself with
  glibc's huge-page tunable: bert_jax/cli.py)."""
  from bert_jax import cli
  return cli.huge_pages_environ(env) or env


class WorkerFailed(Exception):
  """A worker exited non-zero; the message is one line (its own `error: ...` where it gave one)."""


def _ours_name(impl: str, impls: list[str]) -> str:
  """The table row of ours with attention_impl `impl`: "ours", or "ours[impl]" when several
  kernels are compared."""
  return "ours" if len(impls) == 1 else f"ours[{impl}]"


def _run_worker(name: str, args, python: str | None = None, impl: str | None = None) -> dict:
  label = name if impl is None else _ours_name(impl, args.attention_impl.split(","))
  cmd = [python or sys.executable, os.path.abspath(__file__), f"--worker={name}",
         f"--model={args.model}", f"--seq_len={args.seq_len}", f"--batch_size={args.batch_size}",
         f"--dtype={args.dtype}", f"--max_predictions={args.max_predictions}",
         f"--steps={args.steps}", f"--warmup={args.warmup}", f"--remat={args.remat}",
         f"--device={args.device}", f"--hf_config={args.hf_config}",
         f"--attention_impl={impl or args.attention_impl.split(',')[0]}"]
  if args.attention_dropout is not None:
    cmd.append(f"--attention_dropout={args.attention_dropout}")
  if args.scan:
    cmd.append("--scan")
  platform = "cuda" if args.device == "gpu" and name != "hf_flax" else "cpu"
  env = dict(os.environ, JAX_PLATFORMS=platform, TF_CPP_MIN_LOG_LEVEL="2")
  if name == "hf_flax":  # its own virtualenv only (bert_jax is not installed there)
    env["PYTHONPATH"] = ""
  if name in ("ours", "peak") or args.peers_huge_pages:
    env = host_environ(env)
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if proc.returncode:
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    if last.startswith("error: "):  # the worker's own one-line error (e.g. the attention kernel)
      raise WorkerFailed(f"error: {label}: {last[len('error: '):]}")
    if args.keep_going and name != "peak":
      raise WorkerFailed(f"error: the {label} worker failed ({last})")
    if args.device == "gpu":  # most likely no GPU here, or a CPU-only jax/torch: say which
      raise SystemExit(f"error: --device=gpu: the {label} worker failed ({last}); on a machine "
                       "with an NVIDIA GPU, set up with launch/setup_venv.sh gpu,hf")
    raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="base",
                 help="a preset of bert_jax.models.PRESETS: tiny, mini, small, medium, base, "
                      "large (BERT) or modernbert_tiny, modernbert_base, modernbert_large")
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--max_predictions", type=int, default=None,
                 help="masked positions per sequence (BERT: default 20 at 128, 76 at 512, "
                      "else 15%%; ModernBERT: 30%% rounded up, 308 at 1024)")
  p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1: compile)")
  p.add_argument("--remat", default="none", choices=["none", "full", "save_dots"])
  p.add_argument("--scan", action="store_true", help="our step with lax.scan over layers")
  p.add_argument("--attention_impl", default="auto",
                 help="ours' model.attention_impl: auto, xla, cudnn, splash or manual "
                      "(bert_jax/models/attention.py), or a comma-separated list of them "
                      "(e.g. cudnn,xla): one row of ours per kernel, in the same run; with a "
                      "fused kernel (xla, cudnn, splash) or several, attention dropout is 0 in "
                      "every row")
  p.add_argument("--keep_going", action="store_true",
                 help="a worker that fails (out of memory, no CUDA torch, ...) becomes a failed "
                      "row and the other rows still run (the peak worker's failure still ends "
                      "the run)")
  p.add_argument("--peers", action="store_true", help="also run torch, hf_flax and plain_jax "
                 "(ModernBERT: torch, torch_eager_attn, torch_full_logits)")
  p.add_argument("--only", default="", help="comma-separated subset of ours,torch,hf_flax,"
                 "plain_jax (ModernBERT: ours,torch,torch_eager_attn,torch_full_logits,"
                 "torch_compile)")
  p.add_argument("--rounds", type=int, default=1,
                 help="repeat the whole comparison, interleaved (ours, peers, ours, ...), and "
                      "take medians over all rounds: steadier ratios on a noisy machine")
  p.add_argument("--peers_huge_pages", action="store_true",
                 help="run the peers in the host environment bert_jax.train gives itself "
                      "(glibc huge pages) too, instead of as they start by default")
  p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                 help="where ours, plain_jax and torch run (hf_flax: CPU only)")
  p.add_argument("--json", action="store_true")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  p.add_argument("--hf_config", default="", help=argparse.SUPPRESS)  # JSON, from the parent
  p.add_argument("--attention_dropout", type=float, default=None,  # set by the parent
                 help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:  # the parent passes every value explicitly (max_predictions included)
    print(json.dumps(WORKERS[args.worker](args)))
    return
  from bert_jax.models import PRESETS
  from bert_jax.models import attention
  from bert_jax.models.flops import flops_per_token
  if args.model not in PRESETS:
    p.error(f"--model={args.model}: not a preset; choose one of {', '.join(PRESETS)}")
  impls = args.attention_impl.split(",")
  unknown = [i for i in impls if i not in attention.IMPLS]
  if unknown or len(set(impls)) < len(impls):
    p.error(f"--attention_impl={args.attention_impl}: "
            + (f"{', '.join(unknown)} not one of {', '.join(attention.IMPLS)}" if unknown
               else "a kernel is listed twice"))
  if args.attention_dropout is not None:
    p.error("--attention_dropout is set by the benchmark itself (0 with a fused kernel)")
  if len(impls) > 1 or any(i in attention.FUSED_IMPLS for i in impls):
    args.attention_dropout = 0.0  # fused kernels have none; the other rows match them
  family = _family(args.model)
  if args.max_predictions is None and family == "modernbert":
    args.max_predictions = math.ceil(args.seq_len * 0.3)  # the recipe's 30% (308 at 1024)
  if args.max_predictions is None:
    args.max_predictions = max(1, round(args.seq_len * 0.15)) if args.seq_len != 128 else 20
    args.max_predictions = 76 if args.seq_len == 512 else args.max_predictions
  model_config = _model_config(args)  # the run config's model, as ours builds it
  if family == "modernbert":
    peers, known = ["torch", "torch_eager_attn", "torch_full_logits"], MODERNBERT_PEERS
  else:
    peers = ["torch", "plain_jax"] if args.device == "gpu" else ["torch", "hf_flax", "plain_jax"]
    known = BERT_PEERS
  args.hf_config = json.dumps(model_config.to_hf_dict())  # the peers' Bert/ModernBertConfig

  names = ["ours"] + (peers if args.peers else [])
  if args.only:
    names = args.only.split(",")
    unknown = [n for n in names if n not in ("ours",) + known]
    if unknown:
      p.error(f"--only: {', '.join(unknown)} not for {family} models; choose from "
              f"ours,{','.join(known)}")
  if args.device == "gpu" and "hf_flax" in names:
    raise SystemExit("error: --only=hf_flax with --device=gpu: HF Flax runs from .venv-hf-flax, "
                     "which has a CPU jax; leave it out on GPU (the GPU target is vs torch)")
  if "ours" in names:  # a kernel this device or shape cannot run: the library's error, up front
    backend = "gpu" if args.device == "gpu" else "cpu"  # (the workers check their real device)
    for impl in impls:
      _attention_path(args, model_config.replace(attention_impl=impl), backend)
  # (worker, attention_impl or None, row name) in running order: ours once per kernel
  runs = [(n, i, _ours_name(i, impls)) if n == "ours" else (n, None, n)
          for n in names for i in (impls if n == "ours" else [None])]
  peaks, results, failed = [], {}, {}
  for r in range(args.rounds):
    try:
      measured = _run_worker("peak", args)
    except WorkerFailed as e:
      raise SystemExit(str(e)) from None
    peaks.append(measured["peak_flops"])
    peak_how = measured["peak_how"]
    for name, impl, row in runs:
      if row in failed:
        continue
      python = _ensure_flax_venv() if name == "hf_flax" else None
      print(f"round {r + 1}/{args.rounds}: running {row}...", file=sys.stderr)
      try:
        out = _run_worker(name, args, python, impl)
      except WorkerFailed as e:
        if not args.keep_going:
          raise SystemExit(str(e)) from None
        print(f"{e} (--keep_going: the other rows go on)", file=sys.stderr)
        failed[row] = str(e)
        results.pop(row, None)
        continue
      if row in results:  # keep the first round's compile time, pool the step times
        results[row]["times"] += out["times"]
        results[row]["peak_rss_mb"] = max(results[row]["peak_rss_mb"], out["peak_rss_mb"])
      else:
        results[row] = out
  peak = max(peaks)
  fpt = flops_per_token(model_config, args.seq_len, args.max_predictions)
  tokens = args.batch_size * args.seq_len
  rows = {}
  for name, r in results.items():
    times = sorted(r["times"])
    step_s = times[len(times) // 2]
    rows[name] = {"step_time_s": step_s, "tokens_per_s": tokens / step_s,
                  "seq_per_s": args.batch_size / step_s, "mfu": fpt * tokens / step_s / peak,
                  "compile_s": r["compile_s"],
                  "peak_mem_bytes": (r["device_peak_bytes"] if r.get("device_peak_bytes")
                                     is not None else
                                     int((r["peak_rss_mb"] - r["base_rss_mb"]) * 2 ** 20))}
    if "what" in r:  # the workers say how each side runs (dtype, optimizer, attention)
      rows[name].update(what=r["what"], version=r["version"])
    if "attention" in r:  # ours: the attention path this row ran, on its device
      rows[name].update(attention_impl=impls[[_ours_name(i, impls) for i in impls].index(name)],
                        attention=r["attention"], attention_dropout=r["attention_dropout"])
  ours_rows = [_ours_name(i, impls) for i in impls if _ours_name(i, impls) in rows]
  ref = ours_rows[0] if ours_rows else None  # ours/x is over this row (the first kernel's)
  if family == "modernbert":
    print(f"{args.model} seq {args.seq_len} batch {args.batch_size} {args.dtype}, masked LM "
          f"only, {args.max_predictions} masked/seq; {peak_how} {peak / 1e9:.1f} GFLOP/s; "
          f"{fpt / 1e9:.4g} GFLOP/token (ModernBERT formula); median of {args.steps} steps x "
          f"{args.rounds} interleaved round(s), each after {args.warmup} warm-up")
  else:
    print(f"BERT-{args.model} seq {args.seq_len} batch {args.batch_size} {args.dtype}, "
          f"{args.max_predictions} masked/seq; {peak_how} {peak / 1e9:.1f} GFLOP/s; "
          f"{fpt / 1e9:.4g} GFLOP/token; median of {args.steps} steps x {args.rounds} "
          f"interleaved round(s), each after {args.warmup} warm-up")
  tuned = host_environ({}).get("GLIBC_TUNABLES")
  if args.device == "gpu":
    print("device: GPU (peak MB = the device's peak bytes in use)")
  if tuned:
    print(f"host environment: ours and the peak in bert_jax.train's (GLIBC_TUNABLES={tuned}); "
          + ("peers too (--peers_huge_pages)" if args.peers_huge_pages else
             "peers as they start by default (--peers_huge_pages gives them the same)"))
  if args.attention_dropout is not None:
    print(f"attention: ours with attention_impl {', '.join(impls)}; attention dropout 0 in "
          "every row (the fused kernels have none"
          + ("; BERT's preset 0.1 set to 0 for ours and the HF peers"
             + ("; plain_jax keeps its 0.1" if "plain_jax" in names else "")
             if family == "bert" else "; the recipe's is 0 already") + ")")
  vs_torch = "torch" in rows
  notes = ([f"ours/x: {ref}'s tok/s over the row's"] if ref and (len(ours_rows) > 1 or vs_torch)
           else []) + (["x/torch: the row's tok/s over torch's"] if vs_torch else [])
  if notes:
    print("; ".join(notes))
  width = max([10] + [len(name) for name in rows])
  print(f"{'':{width}s} {'step s':>8s} {'tok/s':>9s} {'seq/s':>8s} {'MFU':>6s} "
        f"{'compile s':>9s} {'peak MB':>8s} {'ours/x':>7s}" + (f" {'x/torch':>7s}" if vs_torch
                                                               else ""))
  for name, r in rows.items():
    ratio = rows[ref]["tokens_per_s"] / r["tokens_per_s"] if ref else float("nan")
    print(f"{name:{width}s} {r['step_time_s']:8.3f} {r['tokens_per_s']:9.1f} "
          f"{r['seq_per_s']:8.2f} {100 * r['mfu']:5.1f}% {r['compile_s']:9.1f} "
          f"{r['peak_mem_bytes'] / 2 ** 20:8.0f} {ratio:7.2f}"
          + (f" {r['tokens_per_s'] / rows['torch']['tokens_per_s']:7.2f}" if vs_torch else ""))
  for name, msg in failed.items():
    print(f"{name:{width}s} FAILED: {msg}")
  for name, r in rows.items():
    if "what" in r:
      print(f"  {name}: {r['what']} ({r['version']})")
  if not rows:
    raise SystemExit("error: every row failed")
  if args.json:
    out = dict(rows[ref] if ref else next(iter(rows.values())))
    out.update(host_tunables=tuned, peers_huge_pages=args.peers_huge_pages, device=args.device,
               model=args.model, seq_len=args.seq_len, batch_size=args.batch_size,
               dtype=args.dtype, peak_flops=peak, flops_per_token=fpt,
               **({"family": family, "max_predictions": args.max_predictions}
                  if family == "modernbert" else {}),
               attention_impls=impls, attention_dropout_set=args.attention_dropout,
               ours={rows[n]["attention_impl"]: rows[n] for n in ours_rows},
               peers={k: v for k, v in rows.items() if k not in ours_rows},
               ratios={k: rows[ref]["tokens_per_s"] / v["tokens_per_s"]
                       for k, v in rows.items() if k != ref and ref},
               **({"vs_torch": {k: v["tokens_per_s"] / rows["torch"]["tokens_per_s"]
                                for k, v in rows.items() if k != "torch"}} if vs_torch else {}),
               **({"failed": failed} if failed else {}))
    print(json.dumps(out))


if __name__ == "__main__":
  main()
