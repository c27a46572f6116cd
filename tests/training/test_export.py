"""Export of pretraining checkpoints: HF parity with transformers, google-research/bert names,
a checkpoint written on a sharded mesh exported by a one-device process, model card, errors.

Uses the session fixture `pretrained_run` (conftest.py): BERT-tiny pretrained for 40 steps on a
(data=4, fsdp=2) mesh of 8 fake CPU devices, checkpoints at steps 20 and 40.
"""

import json
import os
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

from bert_jax.training import export
from bert_jax import load_pretrained
from helpers import assert_trees_equal, params_of

pytestmark = pytest.mark.slow  # the first test pays for the pretraining fixture (~45 s)


def _ours_params(workdir, step=None):
  params, got_step, _ = export.restore_params(workdir, step)
  return jax.tree.map(np.asarray, params), got_step


def test_hf_export_matches_transformers(pretrained_run, tmp_path):
  torch = pytest.importorskip("torch", reason="needs the `hf` extra")
  transformers = pytest.importorskip("transformers", reason="needs the `hf` extra")
  out, step = export.export(pretrained_run["workdir"], str(tmp_path / "hf"), format="hf")
  assert step == 40
  assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors", "vocab.txt"]
  with open(pretrained_run["vocab"]) as f:
    assert (out / "vocab.txt").read_text() == f.read()
  hf = transformers.BertForPreTraining.from_pretrained(str(out)).eval()
  ours, _ = export.pretrained_model(pretrained_run["workdir"])
  rng = np.random.default_rng(0)
  ids = rng.integers(5, ours.config.vocab_size, (3, 24)).astype(np.int32)
  types = (np.arange(24)[None] >= 12).astype(np.int32).repeat(3, 0)
  mask = np.ones_like(ids)
  mask[1, 15:] = 0
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                token_type_ids=torch.tensor(types, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long))
  mine = ours(ids, types, mask)
  np.testing.assert_allclose(np.asarray(mine.mlm_logits), theirs.prediction_logits.numpy(),
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(mine.nsp_logits),
                             theirs.seq_relationship_logits.numpy(), atol=1e-5, rtol=0)
  card = (out / "README.md").read_text()
  assert "step 40 of 40" in card and "## Eval metrics (step 40)" in card
  assert "| mlm_accuracy |" in card and "preset `tiny`: 2 layers, hidden 128" in card


def test_tf1_export_has_google_research_bert_names(pretrained_run, tmp_path):
  tf = pytest.importorskip("tensorflow")
  out, _ = export.export(pretrained_run["workdir"], str(tmp_path / "tf1"), format="tf1")
  assert {"bert_config.json", "vocab.txt", "bert_model.ckpt.index"} <= set(os.listdir(out))
  reader = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
  shapes = reader.get_variable_to_shape_map()
  assert len(shapes) == 5 + 2 * 16 + 2 + 5 + 2  # embeddings, 2 layers, pooler, MLM, NSP
  assert shapes["bert/embeddings/word_embeddings"] == [2000, 128]
  assert shapes["bert/encoder/layer_1/attention/self/query/kernel"] == [128, 128]
  assert shapes["cls/seq_relationship/output_weights"] == [2, 128]
  params, _ = _ours_params(pretrained_run["workdir"])
  qkv = params["bert"]["encoder"]["layers"][1]["attention"]["qkv"]["kernel"]  # [H, 3, N, D]
  np.testing.assert_array_equal(
      reader.get_tensor("bert/encoder/layer_1/attention/self/value/kernel"),
      qkv[:, 2].reshape(128, 128))
  np.testing.assert_array_equal(reader.get_tensor("cls/predictions/output_bias"),
                                params["mlm"]["output_bias"])
  cfg = json.loads((out / "bert_config.json").read_text())
  assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (128, 2, 2000)


def test_sharded_checkpoint_exports_in_a_one_device_process(pretrained_run, tmp_path,
                                                            repo_root):
  import orbax.checkpoint as ocp
  workdir = pretrained_run["workdir"]
  # The checkpoint was written sharded: the word embeddings over fsdp on a 4 x 2 x 1 mesh.
  meta = ocp.PyTreeCheckpointer().metadata(os.path.join(workdir, "checkpoints", "20", "state"))
  word = meta.item_metadata.tree["params"]["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert list(word.sharding.shape) == [4, 2, 1] and "fsdp" in str(word.sharding.partition_spec)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  env["JAX_PLATFORMS"] = "cpu"
  out = tmp_path / "orbax"
  cmd = [sys.executable, "-m", "bert_jax.export", f"--workdir={workdir}", "--step=20",
         "--format=orbax", f"--output_dir={out}"]
  run = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.strip().endswith(f"exported step 20 of {workdir} as orbax to {out}")
  expected, step = _ours_params(workdir, 20)
  assert step == 20
  assert_trees_equal(params_of(load_pretrained(str(out))), expected)
  # Step 20 differs from step 40: the step flag was honoured.
  latest, _ = _ours_params(workdir)
  assert not np.array_equal(latest["nsp"]["kernel"], expected["nsp"]["kernel"])
  # The same CLI, an error: one line on stderr, exit status 2.
  run = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == (
      f"error: --output_dir={out} already exists; pass --overwrite to replace it or choose "
      "another directory")


def test_bfloat16_export_and_overwrite(pretrained_run, tmp_path):
  out = tmp_path / "hf16"
  export.export(pretrained_run["workdir"], str(out), format="hf", dtype="bfloat16")
  raw = (out / "model.safetensors").read_bytes()
  header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
  assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
  export.export(pretrained_run["workdir"], str(out), format="hf", overwrite=True)
  raw = (out / "model.safetensors").read_bytes()
  header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
  assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F32"}
  assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_errors(pretrained_run, tmp_path):
  workdir = pretrained_run["workdir"]
  with pytest.raises(export.ExportError) as e:
    export.export(str(tmp_path), str(tmp_path / "out"))
  assert str(e.value) == (f"no checkpoint in {tmp_path}: {tmp_path}/checkpoints does not exist; "
                          "train first (python -m bert_jax.train --workdir=...)")
  with pytest.raises(export.ExportError) as e:
    export.export(workdir, str(tmp_path / "out"), step=7)
  assert str(e.value) == (f"--step=7: no checkpoint at that step in {workdir}; available: "
                          "20, 40")
  (tmp_path / "exists").mkdir()
  with pytest.raises(export.ExportError) as e:
    export.export(workdir, str(tmp_path / "exists"))
  assert str(e.value) == (f"--output_dir={tmp_path / 'exists'} already exists; pass "
                          "--overwrite to replace it or choose another directory")
  with pytest.raises(export.ExportError, match=r"--format='onnx' is not one of hf, tf1, orbax"):
    export.export(workdir, str(tmp_path / "out"), format="onnx")
  (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
  (tmp_path / "empty" / "config.json").write_text("{}")
  with pytest.raises(export.ExportError) as e:
    export.export(str(tmp_path / "empty"), str(tmp_path / "out"))
  assert str(e.value) == (f"no checkpoint in {tmp_path / 'empty'}: "
                          f"{tmp_path / 'empty' / 'checkpoints'} holds no finished step")
  assert not (tmp_path / "out").exists()
