"""ModernBERT through the training stack: sharded == one device, packed == unpacked, exact
resume, and text -> vocab -> prepare (objective none, 30%) -> train -> export -> transformers."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from bert_jax.parallel import sharding
from bert_jax.training import pretraining, train_state, trainer
from helpers import tiny_config
from test_pretraining import _run  # the same 3 steps on synthetic batches

# 4 layers (global, local, local, global), an 8-token reach each side: seq 64 > the window.
MODERN = {"model.preset": "modernbert_tiny", "model.local_attention": 16,
          "data.objective": "none", "data.max_predictions_per_seq": 20}


@pytest.fixture(scope="module")
def single_device():
  return _run(tiny_config(**MODERN), (1, 1, 1))


@pytest.mark.parametrize("mesh_shape", [
    (8, 1, 1), (2, 4, 1), (1, 2, 2), (2, 2, 2)])
def test_sharded_meshes_match_one_device(single_device, mesh_shape):
  """data, fsdp and tensor parallelism give one device's losses (1e-5 relative) and parameters
  (1e-4 absolute) after 3 steps, with the parameters sharded as the rules table says."""
  ref_losses, ref_state = single_device
  losses, state = _run(tiny_config(**MODERN), mesh_shape)
  assert ref_losses[-1] < ref_losses[0]
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
  _, fsdp, tensor = mesh_shape
  layer = state.params["model"]["encoder"]["layers"][1]
  wqkv = layer["attn"]["wqkv"]["kernel"]  # [H, 3, N, D]
  assert wqkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", None, "tensor", None)
  assert wqkv.addressable_shards[0].data.shape == (128 // fsdp, 3, 2 // tensor, 64)
  wi = layer["mlp"]["wi"]["kernel"]  # [H, 2, I]: tensor parallelism splits I, not the halves
  assert wi.addressable_shards[0].data.shape == (128 // fsdp, 2, 192 // tensor)


def test_packed_rows_train_like_the_same_sequences_unpacked(sample_data):
  """One step on packed rows (segment ids, positions restarting per sequence) = one step on
  the same sequences one per row, through global and local layers."""
  from bert_jax.data import input_pipeline
  _, data_dir = sample_data
  group = next(input_pipeline.train_iterator(data_dir, batch_size=256, seq_len=64,
                                             max_predictions_per_seq=10, seed=0))
  rows = input_pipeline.pack_examples(group, max_sequences_per_row=4, pad_id=0)
  used = rows.pop("row_used")
  rows = {k: v[used] for k, v in rows.items()
          if k not in ("cls_positions", "nsp_weights", "next_sentence_label")}
  assert len(rows["input_ids"]) < 256
  config = tiny_config(**{**MODERN, "data.max_predictions_per_seq": 10,
                          "model.local_attention": 8})
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  results = []
  for batch in (group, rows):
    setup = pretraining.build(config, mesh, 2000, "none")
    state = setup.init_state(jax.random.key(0))
    state, metrics = setup.train_step(state, train_state.global_batch(batch, setup.batch_sharding))
    results.append((jax.device_get(metrics), jax.device_get(state.params)))
  (m0, p0), (m1, p1) = results
  for k in ("loss", "mlm_accuracy", "grad_norm"):
    np.testing.assert_allclose(m1[k], m0[k], rtol=2e-5, err_msg=k)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p0)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_sentence_objective_is_refused():
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  with pytest.raises(trainer.UserError) as e:
    pretraining.build(tiny_config(**{"model.preset": "modernbert_tiny"}), mesh, 500, "sop")
  assert str(e.value) == (
      "--config.model.preset=modernbert_tiny has no sentence-pair head for objective sop; "
      "prepare the data with --objective=none (ModernBERT pretrains on masked-LM alone)")


def test_bert_rejects_modernbert_keys():
  with pytest.raises(trainer.UserError) as e:
    trainer.config_lib.validate_config(tiny_config(**{"model.global_rope_theta": 1e4}))
  assert str(e.value) == ("--config.model.global_rope_theta=10000.0 does not apply to bert "
                          "models; leave it unset (-1)")


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == "train"]


@pytest.mark.slow
def test_pretrain_from_text_and_export_to_transformers(tmp_path):
  """vocab (byte-level BPE) -> prepare (objective none, 30% masking) -> train ModernBERT-tiny
  with StableAdamW + WSD and batch-size warmup, interrupted and resumed (the same losses and parameters as one
  uninterrupted run) -> export -> transformers' AutoModelForMaskedLM loads a
  ModernBertForMaskedLM with our logits."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from configs import modernbert_tiny

  from bert_jax import load_pretrained
  from bert_jax.data import SAMPLE_CORPUS, prepare
  from bert_jax.text import vocab as vocab_lib
  from bert_jax.training import export
  vocab_lib.train_vocab(str(SAMPLE_CORPUS), str(tmp_path / "vocab"), 2000, kind="bpe")
  prepare.prepare(input=str(SAMPLE_CORPUS), vocab=str(tmp_path / "vocab" / "tokenizer.json"),
                  data_dir=str(tmp_path / "data"), max_seq_length=128,
                  max_predictions_per_seq=39, masked_lm_prob=0.3, objective="none",
                  validation_fraction=0.1)
  config = modernbert_tiny.get_config()
  config.data.data_dir = str(tmp_path / "data")
  config.data.seq_len, config.data.max_predictions_per_seq = 128, 39
  config.data.pack = False
  config.train.batch_size, config.train.num_steps, config.train.log_every_steps = 16, 8, 1
  # The preset's batch-size warmup, shortened: 2 steps of 8 sequences, then 16.
  config.train.batch_size_warmup_min, config.train.batch_size_warmup_tokens = 8, 2 * 8 * 128
  config.optimizer.warmup_steps, config.optimizer.decay_steps = 2, 2
  config.checkpoint.every_steps, config.eval.every_steps = 4, 8
  config.eval.batch_size, config.eval.num_batches = 8, 1
  config.train.peak_tflops_per_device = 1.0
  trainer.train_and_evaluate(config, str(tmp_path / "whole"))
  # Resume: the run's step-4 checkpoint alone in a fresh workdir, trained on to step 8.
  shutil.copytree(tmp_path / "whole" / "checkpoints", tmp_path / "resumed" / "checkpoints")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "8")
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  a = {r["step"]: r["loss"] for r in _metrics(tmp_path / "whole")}
  b = {r["step"]: r["loss"] for r in _metrics(tmp_path / "resumed")}
  # (the loop logs from the second step after a start: the first one's window holds compile)
  assert set(b) >= {6, 7, 8} and min(b) > 4 and all(a[s] == b[s] for s in b)
  assert a[8] < a[min(a)]
  pa, _, _ = export.restore_params(str(tmp_path / "whole"))
  pb, _, _ = export.restore_params(str(tmp_path / "resumed"))
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  out, step = export.export(str(tmp_path / "whole"), str(tmp_path / "hf"), format="hf")
  assert step == 8 and (out / "tokenizer.json").exists()
  hf_config = json.loads((out / "config.json").read_text())
  assert (hf_config["model_type"], hf_config["architectures"]) == (
      "modernbert", ["ModernBertForMaskedLM"])
  assert (hf_config["pad_token_id"], hf_config["cls_token_id"], hf_config["sep_token_id"]) == (
      0, 2, 3)  # the BPE vocabulary's specials, not ModernBERT's 50283 / 50281 / 50282
  assert "# ModernBERT pretrained with bert_jax" in (out / "README.md").read_text()
  hf = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
  tok = transformers.AutoTokenizer.from_pretrained(out)
  enc = tok(["The os module provides a portable way of using [MASK] functionality."],
            return_tensors="np")
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(enc["input_ids"])).logits.numpy()
  ours = load_pretrained(out, task=None)
  assert type(ours).__name__ == "ModernBertForMaskedLM"
  np.testing.assert_allclose(np.asarray(ours(enc["input_ids"]).mlm_logits), want, atol=1e-5,
                             rtol=0)
  assert enc["input_ids"][0, 0] == 2 and enc["input_ids"][0, -1] == 3  # [CLS] ... [SEP]
  # tokenizer_config.json came along (vocab -> dataset -> export): transformers' fill-mask
  # pipeline knows the mask token.
  assert (out / "tokenizer_config.json").exists() and tok.mask_token == "[MASK]"
  top = transformers.pipeline("fill-mask", model=hf, tokenizer=tok, top_k=3)(
      "The os module provides a portable way of using [MASK] functionality.")
  assert len(top) == 3 and all(0 < t["score"] < 1 for t in top)

