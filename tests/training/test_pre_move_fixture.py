"""Files written by bert_jax before its layout moved into subpackages (tests/fixtures/pre_move,
made at commit 9cada23) still restore, resume, export and load to the numbers they held."""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest

import bert_jax
from bert_jax.training import export
from bert_jax.training.trainer import train_and_evaluate
from helpers import REPO

FIXTURE = REPO / "tests" / "fixtures" / "pre_move"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def _outputs(model):
  x = {k: np.array(v, np.int32) for k, v in EXPECTED["input"].items()}
  out = model(x["input_ids"], x["token_type_ids"], x["attention_mask"], x["masked_positions"])
  return np.asarray(out.mlm_logits), np.asarray(out.nsp_logits)


def _assert_outputs(model, which):
  mlm, nsp = _outputs(model)
  np.testing.assert_allclose(mlm, EXPECTED[which]["mlm_logits"], atol=2e-5)
  np.testing.assert_allclose(nsp, EXPECTED[which]["nsp_logits"], atol=2e-5)


@pytest.mark.parametrize("which", ["export_orbax", "export_hf"])
def test_exports_written_before_the_move_load_to_the_same_outputs(which):
  _assert_outputs(bert_jax.load_pretrained(str(FIXTURE / which)), which)


def test_checkpoint_written_before_the_move_restores_resumes_and_exports(tmp_path, caplog):
  run = tmp_path / "run"
  shutil.copytree(FIXTURE / "run", run)
  params, step, _ = export.restore_params(str(run))
  assert step == EXPECTED["checkpoint"]["step"] == 2
  sums = {jax.tree_util.keystr(p): float(np.asarray(x, np.float64).sum())
          for p, x in jax.tree_util.tree_leaves_with_path(params)}
  assert sums.keys() == EXPECTED["checkpoint"]["param_sums"].keys()
  for name, want in EXPECTED["checkpoint"]["param_sums"].items():
    assert sums[name] == pytest.approx(want, rel=1e-6, abs=1e-6), name

  # Today's exporter reads it (parameters only) to the same model the old one exported.
  out, _ = export.export(str(run), str(tmp_path / "export"), format="orbax")
  _assert_outputs(bert_jax.load_pretrained(out), "export_orbax")

  # And today's trainer resumes it: the state (optimizer included) and the data position.
  config = ml_collections.ConfigDict(json.loads((run / "config.json").read_text()))
  config.train.num_steps = 3
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2  # 8 fake devices, batch 4
  with caplog.at_level("INFO", logger="absl"):
    train_and_evaluate(config, str(run))
  assert "resumed from checkpoint at step 2" in caplog.text
  assert export.restore_params(str(run))[1] == 3
