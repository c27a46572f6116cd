"""benchmarks/time_to_accuracy.py --quick --json end to end on the bundled sample corpus.

Both trainers run for real, one after the other, each in its own process: `python -m
bert_jax.train` (BERT-tiny, a 1,500-line slice of the sample, batch 16 x 64, 60 steps, an eval
every 20) and benchmarks/hf_trainer_worker.py (HF `Trainer` + `BertForMaskedLM` on the same rows
and eval set). Checks the JSON line's keys and types, that each trainer reported a positive time
to the (low) target or None with a reason, that the times agree with each side's curve, and that
the plot was written. 60-90 s on the shared 2-core host.
"""

import json
import math
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # HF's Trainer needs it (the hf extra installs it)

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "time_to_accuracy.py"
KEYS = ("target_mlm_accuracy", "ours_seconds", "hf_seconds", "ours_accuracy_at_budget",
        "hf_accuracy_at_budget", "budget_s", "hf_over_ours", "ours_reason", "hf_reason",
        "settings", "runs", "plot")


@pytest.mark.slow
def test_quick_json_end_to_end(tmp_path):
  from bert_jax.data import SAMPLE_CORPUS
  out_dir = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, str(SCRIPT), f"--corpus={SAMPLE_CORPUS}", "--quick", "--json",
       f"--work_dir={tmp_path / 'work'}", f"--out_dir={out_dir}"],
      capture_output=True, text=True, timeout=600, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-4000:]
  print(proc.stdout)  # the table, in pytest's captured output
  result = json.loads(proc.stdout.strip().splitlines()[-1])  # the last line: one JSON object
  for key in KEYS:
    assert key in result, f"missing {key}: {sorted(result)}"
  target = result["target_mlm_accuracy"]
  assert 0 < target <= 1
  for side in ("ours", "hf"):
    seconds, reason = result[f"{side}_seconds"], result[f"{side}_reason"]
    run = result["runs"][side]
    assert run["curve"], f"{side}: no eval recorded ({reason})"
    if seconds is None:  # not reached: it must say why
      assert isinstance(reason, str) and reason, f"{side}: no time and no reason"
      assert max(c["mlm_accuracy"] for c in run["curve"]) < target
    else:
      assert isinstance(seconds, float) and 0 < seconds < 600, (side, seconds)
      assert reason is None
      # The time is that of the first eval at or above the target, on the curve's clock.
      first = next(c for c in run["curve"] if c["mlm_accuracy"] >= target)
      assert math.isclose(first["seconds"], seconds, abs_tol=0.5), (side, first, seconds)
      assert first["step"] == result[f"{side}_target_step"]
      assert all(c["seconds"] > 0 for c in run["curve"])
    at_budget = result[f"{side}_accuracy_at_budget"]  # the best eval by the budget
    by_budget = [c["mlm_accuracy"] for c in run["curve"] if c["seconds"] <= result["budget_s"]]
    assert at_budget == (max(by_budget) if by_budget else None), (side, at_budget, by_budget)
    b = run["breakdown"]
    assert b["num_evals"] == len(run["curve"]) and b["steps_per_s"] > 0, (side, b)
  if result["ours_seconds"] and result["hf_seconds"]:
    assert math.isclose(result["hf_over_ours"],
                        result["hf_seconds"] / result["ours_seconds"], rel_tol=1e-6)
  # Both sides scored the same eval set: our eval's examples are HF's rows.
  s = result["settings"]
  assert all(c["examples"] == s["eval_rows"] for c in result["runs"]["ours"]["curve"])
  assert all(c["predictions"] == s["eval_predictions"] for c in result["runs"]["hf"]["curve"])
  plot = pathlib.Path(result["plot"])
  assert plot.parent == out_dir and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert (out_dir / "time_to_accuracy.json").exists()
