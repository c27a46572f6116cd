"""bert_jax.training.aot_search: the search for the largest per-chip batch, against a memory model.

The TPU compiles themselves are tested in test_aot.py; here the compile function is a chip model
(memory linear in the batch, a usable-HBM limit past which XLA refuses) so the search logic --
the line from the first chip, the step down on a refusal, the step up where a chip uses less
memory per sequence than the line, the gap after a refusal that follows a fit, the resume --
is checked exactly and fast.
"""

import json
import types

from bert_jax.training import aot, aot_search

GiB = aot.GiB
# chip kind -> (fixed GiB, GiB per sequence, GiB XLA lets a program use)
CHIPS = {"v5p": (1.5, 0.1, 95.0), "v5e": (1.5, 0.08, 15.75), "v4": (1.5, 0.11, 30.75)}


def _fake_compile(calls):
  def compile_(cell, per_chip):
    topology = cell.topology
    calls.append((topology, per_chip))
    chip, _, chips = aot.parse_topology(topology)
    fixed, per_seq, usable = CHIPS[topology.split("-")[0]]
    need = fixed + per_seq * per_chip
    if need > usable:
      config = types.SimpleNamespace(train=types.SimpleNamespace(batch_size=per_chip * chips))
      raise aot.DoesNotFit(config, topology, chips, "RESOURCE_EXHAUSTED: Ran out of memory in "
                           f"memory space hbm. Used {need:.2f}G of {usable:.2f}G hbm.")
    return types.SimpleNamespace(
        per_device_bytes=need * GiB, hbm_bytes=chip.hbm_bytes, fits=need * GiB <= chip.hbm_bytes,
        batch_size=per_chip * chips, devices=chips, estimated_step_s=0.5,
        estimated_mfu=0.5, estimated_seq_per_s=per_chip * chips / 0.5, compile_s=1.0)
  return compile_


def _largest(topology):
  fixed, per_seq, usable = CHIPS[topology.split("-")[0]]
  return int((usable - fixed) / per_seq) // 8 * 8


def _quiet(line):
  pass


def test_cells_parse_and_default_to_the_docs_grid():
  assert aot_search.parse_cells("base-128-none-v5p-8,bert_large-512-save_dots-v4-32") == [
      aot_search.Cell("bert_base", 128, 20, "none", "v5p-8"),
      aot_search.Cell("bert_large", 512, 80, "save_dots", "v4-32")]
  cells = aot_search.parse_cells("")
  assert len(cells) == 2 * 2 * 2 * 5 and cells[0] == aot_search.Cell(
      "bert_base", 128, 20, "none", "v5p-8")


def test_largest_batch_per_chip_steps_down_and_up(tmp_path):
  calls = []
  out = str(tmp_path / "table.jsonl")
  cells = aot_search.parse_cells("base-128-none-v5p-8,base-128-none-v5e-8,base-128-none-v4-8")
  aot_search.search(cells, _fake_compile(calls), out, log=_quiet)
  rows = {r["topology"]: r for r in aot_search.read_rows(out)}
  # v5p: the line (two compiles) is exact; the third compile checks it.
  assert rows["v5p-8"]["per_chip_batch"] == _largest("v5p") == 928
  assert calls[:3] == [("v5p-8", 32), ("v5p-8", 64), ("v5p-8", 928)]
  # v5e uses less memory per sequence than the v5p line: stepped up to its own largest batch.
  assert rows["v5e-8"]["per_chip_batch"] == _largest("v5e") == 176
  # v4 uses more: the line's batch is refused, then stepped down to what fits.
  assert rows["v4-8"]["per_chip_batch"] == _largest("v4") == 264
  assert all(r["fits"] and r["per_device_gib"] <= CHIPS[t.split("-")[0]][2]
             for t, r in rows.items())
  assert "| BERT-Base | 128 | none | v5e-8 (8) | 176 |" in aot_search.markdown(rows.values())
  with open(out) as f:  # one JSON line per cell
    assert [json.loads(line)["topology"] for line in f] == ["v5p-8", "v5e-8", "v4-8"]

  # Resume: finished cells are not compiled again.
  calls.clear()
  assert aot_search.search(cells, _fake_compile(calls), out, log=_quiet) == []
  assert calls == []


def test_a_refusal_after_a_fit_tries_the_gap_between_them(tmp_path, monkeypatch):
  # A chip that needs less per sequence than the first chip's line (0.08 vs 0.1 GiB): the line's
  # batch (304) fits, the step up (to 376, counted against the full 32 GiB) is refused at XLA's
  # usable 30.75 GiB, and the line then says 288 -- below what already fit. The search goes on
  # from 312 instead of stopping at 304 and reaches the chip's own largest batch, 360.
  monkeypatch.setitem(CHIPS, "v4", (1.5, 0.08, 30.75))
  calls = []
  out = str(tmp_path / "table.jsonl")
  aot_search.search(aot_search.parse_cells("base-128-none-v5p-8,base-128-none-v4-8"),
                    _fake_compile(calls), out, log=_quiet)
  rows = {r["topology"]: r for r in aot_search.read_rows(out)}
  assert rows["v4-8"]["per_chip_batch"] == _largest("v4") == 360
  assert [b for t, b in calls if t == "v4-8"] == [304, 376, 312, 360]
