"""A fine-tuning suite: several tasks, several seeds, one table (as MosaicBERT's GLUE script).

`python -m bert_jax.finetune_suite` calls `run_suite`. A suite is an ml_collections config
(configs/finetune/suites/*.py) with

  name       the suite's name (for the table and suite.json)
  seeds      the seeds of a task that lists none (train.seed = each)
  result     final | best: each run's last eval, or its eval at the best step (eval.best_metric)
  data_dir   where the data is: the TFDS data dir of GLUE (and other TFDS) tasks; the directory
             relative data.train_file / eval_file / test_file of file tasks are joined to
  glue_dir   GLUE's own TSVs (CoLA/train.tsv, CoLA/dev.tsv, ...): read instead of TFDS
  overrides  fine-tuning config keys, nested as in configs/finetune/default.py, for every task
  tasks      a ConfigDict(sort_keys=False) (the table keeps its order) of
             name -> {config: a fine-tuning config file (a path, or a name under
             configs/finetune/: glue_cola), glue: the GLUE task it is (cola, sst2, ...; its data
             then comes from glue_dir, read by column position as GLUE's processors do and
             rewritten to WORKDIR/data/<Task>/ with named columns, or from TFDS glue/<task>),
             overrides: as above, for this task,
             seeds: [..] ([] = the suite's), metrics: "f1,accuracy" (the metrics whose mean is
             the task's score, the number that enters the average), hint: how to get the data}

Every (task, seed) runs `finetune_and_evaluate` into WORKDIR/<task>/seed<k>/ (the config is also
written there as suite_config.py: `python -m bert_jax.finetune --config=WORKDIR/<task>/seed<k>/
suite_config.py --workdir=WORKDIR/<task>/seed<k>` reruns one by hand). A run whose results.json
has its final eval is finished and skipped on a rerun; an unfinished one resumes from its
checkpoint; a run directory holding another config is an error (no stale numbers). Runs go one
after another in this process (each uses every local device, as `bert_jax.finetune` does), or
with `parallel=N` as N concurrent `python -m bert_jax.finetune` processes, run i pinned to GPU i
(CUDA_VISIBLE_DEVICES). The table: per task its score's mean ± sample std over the seeds and the
number of seeds; then the mean of the tasks' mean scores. WORKDIR/suite.json holds the same and
every eval metric's mean and std; for a task whose runs scored a labelled test file (results.json
best_test, each run's best-on-dev model), the same of the test scores (`test`), shown beside its
row.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import importlib.util
import json
import logging
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import ml_collections
from etils import epath

from bert_jax import paths
from bert_jax import errors
from bert_jax.errors import UserError

log = logging.getLogger("bert_jax")
REPO = pathlib.Path(__file__).resolve().parents[2]
SUITES_DIR = REPO / "configs" / "finetune" / "suites"
FINETUNE_CONFIGS = REPO / "configs" / "finetune"
RESULTS = ("final", "best")
FINETUNE_COMMAND = (sys.executable, "-m", "bert_jax.finetune")  # what --parallel starts

# The metrics each fine-tuning task's eval reports (tasks.py / metrics.py / squad.py); f1 of a
# classification task only with two classes.
TASK_METRICS = {
    "classification": ("accuracy", "mcc", "f1"),
    "regression": ("pearson", "spearman", "mse"),
    "token_classification": ("precision", "recall", "f1", "accuracy"),
    "question_answering": ("exact_match", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact",
                           "NoAns_f1"),
}


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """A GLUE task's own TSVs (download_glue_data.py's layout), read by column position as GLUE's
  processors (google-research/bert run_classifier.py, HF run_glue) read them."""
  dir: str
  dev: str
  header: bool  # CoLA's train/dev files have none
  text_a: int
  text_b: int | None
  label: int
  task: str = "classification"
  eval_split: str = "validation"  # TFDS

  def files(self, root: str) -> list[str]:
    return [os.path.join(root, self.dir, "train.tsv"), os.path.join(root, self.dir, self.dev)]


GLUE = {
    "cola": GlueTask("CoLA", "dev.tsv", False, 3, None, 1),
    "sst2": GlueTask("SST-2", "dev.tsv", True, 0, None, 1),
    "mrpc": GlueTask("MRPC", "dev.tsv", True, 3, 4, 0),
    "stsb": GlueTask("STS-B", "dev.tsv", True, 7, 8, -1, task="regression"),
    "qqp": GlueTask("QQP", "dev.tsv", True, 3, 4, 5),
    "mnli": GlueTask("MNLI", "dev_matched.tsv", True, 8, 9, -1,
                     eval_split="validation_matched"),
    "qnli": GlueTask("QNLI", "dev.tsv", True, 1, 2, -1),
    "rte": GlueTask("RTE", "dev.tsv", True, 1, 2, -1),
    "wnli": GlueTask("WNLI", "dev.tsv", True, 1, 2, -1),
}


@dataclasses.dataclass
class Run:
  task: str
  seed: int
  config: ml_collections.ConfigDict
  workdir: epath.Path

  @property
  def name(self) -> str:
    return f"suite task {self.task} seed {self.seed}"


# ---- loading configs --------------------------------------------------------------------------
def _load_py(path: pathlib.Path, what: str):
  """get_config() of a config file (configs/ importable, as from the repository root)."""
  if str(REPO) not in sys.path and (REPO / "configs").is_dir():
    sys.path.append(str(REPO))  # config files import configs.finetune.default
  spec = importlib.util.spec_from_file_location(f"_bert_jax_config_{abs(hash(str(path)))}",
                                                path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    return module.get_config()
  except Exception as e:  # noqa: BLE001 - a user's file: any error is theirs
    raise UserError(f"{what}={path}: cannot load it ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); it must define "
                    "get_config()") from None


def suite_path(suite: str) -> pathlib.Path:
  """`glue` -> configs/finetune/suites/glue.py; a path as given."""
  if suite.endswith(".py") or os.sep in suite or "/" in suite:
    path = pathlib.Path(suite)
    if not path.is_file():
      raise UserError(f"--suite={suite}: no such file; pass a suite config (.py) or one of "
                      f"{', '.join(available_suites())}")
    return path
  path = SUITES_DIR / f"{suite}.py"
  if not path.is_file():
    raise UserError(f"--suite={suite}: no such suite (looked for {path}); pass one of "
                    f"{', '.join(available_suites()) or '(none found)'} or a suite config file")
  return path


def available_suites() -> list[str]:
  return sorted(p.stem for p in SUITES_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_suite(suite: str) -> ml_collections.ConfigDict:
  path = suite_path(suite)
  s = _load_py(path, "--suite")
  if not isinstance(s, ml_collections.ConfigDict) or "tasks" not in s:
    raise UserError(f"--suite={path}: get_config() must return a ConfigDict with `tasks`")
  with s.unlocked():
    for key, default in (("name", path.stem), ("seeds", [0]), ("result", "final"),
                         ("data_dir", ""), ("glue_dir", ""), ("init_from", "")):
      if key not in s:
        s[key] = default
    if "overrides" not in s:
      s.overrides = {}
    s.path = str(path)
  return s


def _finetune_config_path(ref: str, suite_file: str) -> pathlib.Path:
  """A task's `config`: '' -> default.py; a name -> configs/finetune/<name>.py; a path as given
  (else beside the suite file, else under the repository)."""
  if not ref:
    return FINETUNE_CONFIGS / "default.py"
  if not ref.endswith(".py"):
    return FINETUNE_CONFIGS / f"{ref}.py"
  for candidate in (pathlib.Path(ref), pathlib.Path(suite_file).parent / ref, REPO / ref):
    if candidate.is_file():
      return candidate
  return pathlib.Path(ref)


# ---- overrides --------------------------------------------------------------------------------
def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str,
                    prefix: str = "") -> None:
  """Nested {group: {key: value}} onto config; a key the config lacks is an error."""
  items = overrides.items() if overrides else []
  for key, value in items:
    name = f"{prefix}{key}"
    if key not in config:
      raise UserError(f"{where}: {name!r} is not a fine-tuning config key (every key is listed "
                      "in configs/finetune/default.py)")
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(value, (dict, ml_collections.ConfigDict)):
        raise UserError(f"{where}: {name!r} is a group of keys; give it a dict")
      apply_overrides(config[key], value, where, f"{name}.")
    else:
      try:
        config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
      except TypeError as e:
        raise UserError(f"{where}: {name}={value!r}: {e}") from None


def _parse_value(old, text: str, item: str, name: str):
  if isinstance(old, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise UserError(f"--set={item}: {name} is a bool; pass true or false")
    return text.lower() in ("true", "1")
  for kind in (int, float):
    if isinstance(old, kind):
      try:
        return kind(text)
      except ValueError:
        raise UserError(f"--set={item}: {name} is a{'n' if kind is int else ''} "
                        f"{kind.__name__}") from None
  return text


def parse_sets(sets: list[str], task_names: list[str]) -> dict:
  """--set=KEY=VALUE (every task) / --set=TASK:KEY=VALUE -> {task or '': [(key, text, item)]}."""
  out: dict[str, list] = {}
  for item in sets or []:
    target, sep, text = item.partition("=")
    if not sep or not target:
      raise UserError(f"--set={item}: expected KEY=VALUE or TASK:KEY=VALUE, e.g. "
                      "--set=train.num_epochs=2")
    task, _, key = target.rpartition(":")
    if task and task not in task_names:
      raise UserError(f"--set={item}: {task!r} is not a task of this suite "
                      f"({', '.join(task_names)})")
    out.setdefault(task, []).append((key, text, item))
  return out


def _apply_sets(config, sets: list[tuple[str, str, str]]) -> None:
  for key, text, item in sets:
    group, _, name = key.rpartition(".")
    node = config
    for part in group.split(".") if group else []:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or name not in node or isinstance(
        node[name], ml_collections.ConfigDict):
      raise UserError(f"--set={item}: {key!r} is not a fine-tuning config key (every key is "
                      "listed in configs/finetune/default.py)")
    node[name] = _parse_value(node[name], text, item, key)


# ---- resolving tasks into runs ----------------------------------------------------------------
def _metrics(task_cfg, name: str, config) -> list[str]:
  value = task_cfg.get("metrics", "") or config.eval.best_metric
  names = [m.strip() for m in (value.split(",") if isinstance(value, str) else value)
           if m.strip()]
  if not names:  # the task's own (tasks.py default_metric)
    names = [{"classification": "accuracy", "regression": "pearson"}.get(config.task, "f1")]
  known = TASK_METRICS.get(config.task, ())
  for m in names:
    if m not in known:
      raise UserError(f"suite task {name}: metric {m!r} is not one that a {config.task} eval "
                      f"reports ({', '.join(known)}); fix `metrics` in the suite config")
  return names


def _tfds_dir(data_dir: str) -> str:
  return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def _glue_data(config, name: str, glue: str, s, workdir: epath.Path) -> dict:
  """Sets config.data for GLUE task `glue` (TSVs in s.glue_dir, else TFDS); returns what the
  data check needs: {kind, paths, ...}."""
  g = GLUE[glue]
  d = config.data
  config.task = g.task
  if s.glue_dir:
    d.source, d.tfds_name = "files", ""
    d.train_file = str(workdir / "data" / g.dir / "train.tsv")
    d.eval_file = str(workdir / "data" / g.dir / "dev.tsv")
    d.test_file, d.format = "", "tsv"
    d.text_a_key, d.text_b_key = ("sentence1", "sentence2") if g.text_b is not None else (
        "sentence", "")
    d.label_key = "label"
    return {"kind": "glue_tsv", "glue": glue, "sources": g.files(s.glue_dir),
            "targets": [d.train_file, d.eval_file]}
  d.source, d.tfds_name = "tfds", f"glue/{glue}"
  d.tfds_data_dir = _tfds_dir(s.data_dir)
  d.train_split, d.eval_split, d.test_split = "train", g.eval_split, ""
  return {"kind": "tfds", "name": d.tfds_name, "dir": d.tfds_data_dir}


def _file_data(config, name: str, s, hint: str) -> dict:
  d = config.data
  if d.source == "tfds":
    d.tfds_data_dir = d.tfds_data_dir or _tfds_dir(s.data_dir)
    return {"kind": "tfds", "name": d.tfds_name, "dir": d.tfds_data_dir}
  found, relative = [], []
  for key in ("train_file", "eval_file", "test_file"):
    path = d[key]
    if path and not paths.is_url(path) and not os.path.isabs(path):
      relative.append(path)
      if not s.data_dir:
        raise UserError(f"suite task {name}: data.{key}={path} is relative to the suite's data "
                        "directory and no --data_dir was given; "
                        f"{hint or 'pass --data_dir=DIR, the directory holding it'}")
      d[key] = path = os.path.join(s.data_dir, path)
    if path:
      found.append(path)
  if not d.train_file:
    raise UserError(f"suite task {name}: no data.train_file (or data.source=tfds) in the suite "
                    "config")
  return {"kind": "files", "paths": found, "relative": relative}


def resolve(s, workdir: str, *, init_from: str, tasks: list[str] | None = None,
            seeds: list[int] | None = None, sets: list[str] | None = None):
  """The suite's runs (task order, then seed order) and, per task, its metrics and data spec."""
  if s.result not in RESULTS:
    raise UserError(f"suite {s.name}: result={s.result!r} is not one of final, best")
  names = list(s.tasks.keys())
  if not names:
    raise UserError(f"--suite={s.path}: the suite has no tasks")
  selected = names
  if tasks:
    unknown = [t for t in tasks if t not in names]
    if unknown:
      raise UserError(f"--tasks={','.join(tasks)}: {', '.join(unknown)} not in suite {s.name} "
                      f"(its tasks: {', '.join(names)})")
    selected = [t for t in names if t in tasks]
  set_items = parse_sets(sets or [], names)
  workdir = epath.Path(workdir)
  runs, info = [], {}
  for name in selected:
    t = s.tasks[name]
    unknown = set(t.keys()) - {"config", "glue", "overrides", "seeds", "metrics", "hint"}
    if unknown:
      raise UserError(f"suite {s.name} task {name}: unknown field(s) {', '.join(sorted(unknown))}"
                      " (config, glue, overrides, seeds, metrics, hint)")
    path = _finetune_config_path(t.get("config", ""), s.path)
    if not path.is_file():
      raise UserError(f"suite task {name}: config {t.get('config')!r}: no such file ({path})")
    config = ml_collections.ConfigDict(_load_py(path, f"suite task {name}: config").to_dict())
    apply_overrides(config, s.overrides, f"suite {s.name} overrides")
    apply_overrides(config, t.get("overrides", {}), f"suite task {name} overrides")
    glue = t.get("glue", "")
    if glue:
      if glue not in GLUE:
        raise UserError(f"suite task {name}: glue={glue!r} is not a GLUE task "
                        f"({', '.join(GLUE)})")
      data = _glue_data(config, name, glue, s, workdir)
    else:
      data = None
    _apply_sets(config, set_items.get("", []) + set_items.get(name, []))
    if data is None:
      data = _file_data(config, name, s, t.get("hint", ""))
    elif data["kind"] == "tfds":  # as --set left them
      data.update(name=config.data.tfds_name, dir=config.data.tfds_data_dir)
    config.init_from = init_from or s.init_from or config.init_from
    if not (config.data.eval_file if config.data.source == "files" else config.data.eval_split):
      raise UserError(f"suite task {name}: no eval data (data.eval_file / data.eval_split): a "
                      "suite scores every run on its eval split")
    task_seeds = list(seeds if seeds else (t.get("seeds") or s.seeds))
    if not task_seeds:
      raise UserError(f"suite task {name}: no seeds")
    info[name] = {"metrics": _metrics(t, name, config), "data": data, "seeds": task_seeds,
                  "hint": t.get("hint", "")}
    for seed in task_seeds:
      c = copy.deepcopy(config)
      c.train.seed = int(seed)
      runs.append(Run(name, int(seed), c, workdir / name / f"seed{seed}"))
  return runs, info


# ---- the data check: before anything runs ----------------------------------------------------
def _exists(path: str) -> bool:
  return epath.Path(path).is_file() if paths.is_url(path) else os.path.isfile(path)


def check_data(name: str, spec: dict, s, hint: str = "") -> None:
  """One line naming the task, the path(s) looked at and how to get the data."""
  kind = spec["kind"]
  if kind == "tfds":
    pattern = os.path.join(spec["dir"], spec["name"], "*", "dataset_info.json")
    if not (glob.glob(pattern) if not paths.is_url(pattern) else
            list(epath.Path(spec["dir"]).glob(f"{spec['name']}/*/dataset_info.json"))):
      glue = spec["name"].split("/", 1)[1] if spec["name"].startswith("glue/") else ""
      how = hint or (f"prepare it with `tfds build {spec['name']} --data_dir={spec['dir']}` "
                     "where there is network (nothing is downloaded here)")
      if glue and not hint:
        g = GLUE[glue]
        how += (f", or pass --glue_dir=DIR with GLUE's own TSVs (DIR/{g.dir}/train.tsv, "
                f"DIR/{g.dir}/{g.dev})")
      raise UserError(f"suite task {name}: no prepared TFDS {spec['name']} in {spec['dir']} "
                      f"(looked for {pattern}); {how}")
    return
  looked = spec["sources"] if kind == "glue_tsv" else spec["paths"]
  missing = [p for p in looked if not _exists(p)]
  if not missing:
    return
  if kind == "glue_tsv":
    g = GLUE[spec["glue"]]
    how = hint or (f"put GLUE's files there in its own layout ({g.dir}/train.tsv, {g.dir}/{g.dev}"
                   ", as download_glue_data.py writes them), or drop --glue_dir to read TFDS "
                   f"glue/{spec['glue']} from --data_dir")
  else:
    how = hint or (f"pass --data_dir=DIR, the directory holding {', '.join(spec['relative'])}"
                   if spec["relative"] else "fix the data.*_file paths of the suite config")
  raise UserError(f"suite task {name}: missing {missing[0]} (looked for {', '.join(looked)}); "
                  f"{how}")


def convert_glue_tsvs(spec: dict) -> None:
  """GLUE's TSVs -> WORKDIR/data/<Task>/{train,dev}.tsv with named columns (by position, as
  GLUE's processors read them; a row too short, as a few of QQP's, is skipped)."""
  g = GLUE[spec["glue"]]
  for source, target in zip(spec["sources"], spec["targets"]):
    header = ["sentence1", "sentence2", "label"] if g.text_b is not None else ["sentence",
                                                                               "label"]
    lines, skipped = ["\t".join(header)], 0
    with open(source, encoding="utf-8-sig", newline="") as f:
      for n, line in enumerate(f):
        if n == 0 and g.header:
          continue
        cols = line.rstrip("\r\n").split("\t")
        need = max(g.text_a, g.text_b or 0, g.label if g.label >= 0 else 0)
        if len(cols) <= need:
          skipped += 1
          continue
        row = [cols[g.text_a]] + ([cols[g.text_b]] if g.text_b is not None else [])
        lines.append("\t".join(row + [cols[g.label].strip()]))
    if skipped:
      log.warning("%s: %d rows with too few columns skipped", source, skipped)
    if len(lines) == 1:
      raise UserError(f"{source}: no rows in GLUE's {g.dir} layout")
    epath.Path(target).parent.mkdir(parents=True, exist_ok=True)
    paths.atomic_write(target, "\n".join(lines) + "\n")


# ---- one run ----------------------------------------------------------------------------------
def _results(run: Run) -> dict | None:
  p = run.workdir / "results.json"
  if not p.exists():
    return None
  try:
    return json.loads(p.read_text())
  except ValueError:
    return None


def is_finished(run: Run) -> bool:
  results = _results(run)
  return bool(results and results.get("final_eval"))


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_same_config(run: Run) -> None:
  """A run directory that already holds another config is an error (its numbers would be
  another experiment's)."""
  p = run.workdir / "config.json"
  if not p.exists():
    return
  try:
    there = _flat(json.loads(p.read_text()))
  except ValueError:
    return
  here = _flat(json.loads(run.config.to_json_best_effort()))
  diff = [k for k in sorted(set(there) | set(here)) if there.get(k) != here.get(k)]
  if diff:
    shown = ", ".join(f"{k}: {there.get(k)!r} there, {here.get(k)!r} now" for k in diff[:3])
    raise UserError(f"{run.name}: {run.workdir} holds a run with another config ({shown}"
                    f"{', ...' if len(diff) > 3 else ''}); use another --workdir or remove "
                    "that directory")


SUITE_CONFIG_PY = '''"""Written by bert_jax.finetune_suite: this run's config. Rerun it alone with
  python -m bert_jax.finetune --config={path} --workdir={workdir}
"""

import json

import ml_collections

CONFIG = {config!r}


def get_config():
  return ml_collections.ConfigDict(json.loads(CONFIG))
'''


def write_run_config(run: Run) -> str:
  run.workdir.mkdir(parents=True, exist_ok=True)
  path = run.workdir / "suite_config.py"
  paths.atomic_write(path, SUITE_CONFIG_PY.format(path=path, workdir=run.workdir,
                                                  config=run.config.to_json_best_effort()))
  return str(path)


def _run_in_process(run: Run) -> None:
  from bert_jax.finetuning.run import finetune_and_evaluate
  try:
    finetune_and_evaluate(run.config, str(run.workdir))
  except UserError as e:
    raise UserError(f"{run.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
        from e


_EXIT_ERRORS = {errors.EXIT_USAGE: UserError, errors.EXIT_NONFINITE: errors.NonFiniteError,
                errors.EXIT_SAVE_FAILED: errors.SaveError, errors.EXIT_PREEMPTED: errors.Preempted}


def _last_error(log_path: epath.Path) -> str:
  try:
    text = log_path.read_bytes().decode("utf-8", errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  except OSError:
    return ""
  errs = [ln for ln in lines if ln.startswith("error:")]
  return (errs or lines or [""])[-1][:300]


def device_slots(n: int, environ=None) -> list[str]:
  """The CUDA_VISIBLE_DEVICES value of each of n concurrent runs: the i-th visible GPU."""
  environ = os.environ if environ is None else environ
  visible = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
  if not visible:
    return [str(i) for i in range(n)]
  if n > len(visible):
    raise UserError(f"--parallel={n}: only {len(visible)} GPUs are visible "
                    f"(CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']}); lower it")
  return visible[:n]


def _run_parallel(runs: list[Run], n: int) -> None:
  """Runs as `python -m bert_jax.finetune` subprocesses, at most n at a time, each pinned to its
  slot's GPU; output in each run's log.txt. The first failure stops new starts and is raised
  once the running ones end. SIGTERM is passed on (they save a checkpoint) and ends with 143."""
  slots = device_slots(n)
  pending, running, failure = list(runs), {}, None  # running: slot -> (run, Popen, log file)

  def on_sigterm(signum, frame):
    del signum, frame
    raise errors.Preempted("suite: SIGTERM; the running fine-tuning runs saved a checkpoint: "
                           "rerun the same command to resume")

  previous = signal.signal(signal.SIGTERM, on_sigterm)
  try:
    while running or (pending and failure is None):
      for slot in slots:
        if slot in running or not pending or failure is not None:
          continue
        run = pending.pop(0)
        config_py = write_run_config(run)
        logf = open(run.workdir / "log.txt", "ab")
        log.info("%s: started on device %s (log: %s)", run.name, slot, run.workdir / "log.txt")
        proc = subprocess.Popen([*FINETUNE_COMMAND, f"--config={config_py}",
                                 f"--workdir={run.workdir}"],
                                env=dict(os.environ, CUDA_VISIBLE_DEVICES=slot), stdout=logf,
                                stderr=subprocess.STDOUT)
        running[slot] = (run, proc, logf)
      time.sleep(0.5)
      for slot, (run, proc, logf) in list(running.items()):
        rc = proc.poll()
        if rc is None:
          continue
        logf.close()
        del running[slot]
        if rc == 0 and is_finished(run):
          log.info("%s: done", run.name)
        elif failure is None:
          detail = _last_error(run.workdir / "log.txt")
          failure = _EXIT_ERRORS.get(rc, errors.BertJaxError)(
              f"{run.name}: python -m bert_jax.finetune exited {rc}"
              f"{': ' + detail if detail else ''} (log: {run.workdir / 'log.txt'})")
    if failure is not None:
      raise failure
  finally:
    for run, proc, logf in running.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    for run, proc, logf in running.values():
      try:
        proc.wait(timeout=300)
      except subprocess.TimeoutExpired:
        proc.kill()
      logf.close()
    signal.signal(signal.SIGTERM, previous)


# ---- gathering --------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
  n = len(values)
  mean = math.fsum(values) / n
  std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
  return mean, std


def _per_key_mean_std(records: list[dict]) -> dict:
  """{key: {mean, std}} over records, for every key (but step, epoch) that all of them have."""
  keys = [k for k in records[0] if k not in ("step", "epoch") and all(k in r for r in records)]
  return {k: dict(zip(("mean", "std"), _mean_std([float(r[k]) for r in records]))) for k in keys}


def gather(runs: list[Run], info: dict, s, *, init_from: str, workdir: str) -> dict:
  """The summary (suite.json) of finished runs: per task the score (the mean of its metrics)
  per seed, its mean and sample std, every eval metric's mean and std; the average score."""
  key = "final_eval" if s.result == "final" else "best_eval"
  tasks = {}
  for name, spec in info.items():
    mine = [r for r in runs if r.task == name]
    evals, scores, tests = [], [], []
    def score(d: dict, metrics=spec["metrics"]) -> float:  # the task's score: its metrics' mean
      return math.fsum(float(d[m]) for m in metrics) / len(metrics)

    for r in mine:
      results = _results(r) or {}
      ev = results.get(key) or {}
      absent = [m for m in spec["metrics"] if m not in ev]
      if absent:
        raise UserError(f"{r.name}: {r.workdir / 'results.json'} has no {absent[0]!r} in its "
                        f"{key} (it has {', '.join(k for k in ev if k not in ('step', 'epoch'))})"
                        "; fix `metrics` in the suite config")
      evals.append(ev)
      scores.append(score(ev))
      # A labelled test file: the run's best-on-dev model scored on it (results.json best_test).
      tests.append(results.get("best_test"))
    mean, std = _mean_std(scores)
    test = None
    if all(t and all(m in t for m in spec["metrics"]) for t in tests):
      test_scores = [score(t) for t in tests]
      test = {"scores": test_scores, **dict(zip(("mean", "std"), _mean_std(test_scores))),
              "eval": _per_key_mean_std(tests)}
    tasks[name] = {
        "metrics": spec["metrics"], "seeds": [r.seed for r in mine], "n": len(mine),
        "mean": mean, "std": std, "scores": scores,
        "eval": _per_key_mean_std(evals),
        "steps": [int(e.get("step", -1)) for e in evals],
        "test": test,
        "runs": [os.path.relpath(str(r.workdir), str(workdir)) if not paths.is_url(workdir)
                 else str(r.workdir) for r in mine],
    }
  average = math.fsum(t["mean"] for t in tasks.values()) / len(tasks)
  return {"suite": s.name, "suite_config": s.path, "init_from": init_from, "workdir": workdir,
          "result": s.result, "tasks": tasks, "average": average, "average_over": list(tasks)}


def format_table(summary: dict) -> str:
  """One table: task, metric(s), mean ± std over the seeds, seeds; then the average. A task with
  a labelled test file has its best models' test score beside it."""
  rows = [("task", "metric", "mean ± std", "seeds", "")]
  for name, t in summary["tasks"].items():
    details = []
    if len(t["metrics"]) > 1:
      details.append(", ".join(f"{m} {t['eval'][m]['mean']:.4f} ± {t['eval'][m]['std']:.4f}"
                               for m in t["metrics"]))
    if t.get("test"):
      details.append(f"test {t['test']['mean']:.4f} ± {t['test']['std']:.4f} (best models)")
    rows.append((name, "/".join(t["metrics"]), f"{t['mean']:.4f} ± {t['std']:.4f}", str(t["n"]),
                 "; ".join(details)))
  n = len(summary["tasks"])
  rows.append(("average", f"over {n} task{'s' * (n != 1)}", f"{summary['average']:.4f}", "", ""))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = [f"suite {summary['suite']}: {summary['init_from']} ({summary['result']} eval of each "
           "run)"]
  for i, r in enumerate(rows):
    line = "  ".join(c.ljust(w) for c, w in zip(r[:4], widths))
    lines.append((line + ("  " + r[4] if r[4] else "")).rstrip())
    if i == 0 or i == len(rows) - 2:
      lines.append("  ".join("-" * w for w in widths))
  return "\n".join(lines)


# ---- the suite --------------------------------------------------------------------------------
def run_suite(s, workdir: str, *, init_from: str, tasks: list[str] | None = None,
              seeds: list[int] | None = None, sets: list[str] | None = None,
              parallel: int = 1) -> dict:
  """Runs every unfinished (task, seed) of suite config `s` (`load_suite`), then writes
  WORKDIR/suite.json and returns it (see the module docstring); {} on processes other than 0."""
  if parallel < 1:
    raise UserError(f"--parallel={parallel}: must be at least 1")
  runs, info = resolve(s, workdir, init_from=init_from, tasks=tasks, seeds=seeds, sets=sets)
  todo = [r for r in runs if not is_finished(r)]
  for name, spec in info.items():  # every task's data, before anything runs
    if any(r.task == name for r in todo):
      check_data(name, spec["data"], s, spec["hint"])
  for r in runs:
    check_same_config(r)
  lead = True
  if parallel == 1:
    import jax
    lead = jax.process_index() == 0
  for name, spec in info.items():
    if spec["data"]["kind"] == "glue_tsv" and any(r.task == name for r in todo):
      convert_glue_tsvs(spec["data"])  # on every process: each reads the files it names
  done = {id(r) for r in runs} - {id(r) for r in todo}
  log.info("suite %s: %d runs, %d finished, %d to run%s", s.name, len(runs), len(done),
           len(todo), f" ({parallel} at a time)" if parallel > 1 and todo else "")
  for r in runs:
    if id(r) in done:
      log.info("%s: finished (%s), skipped", r.name, r.workdir / "results.json")
  if parallel > 1:
    _run_parallel(todo, parallel)
  else:
    for i, r in enumerate(todo, 1):
      log.info("%s (%d/%d): %s", r.name, i, len(todo), r.workdir)
      if lead:
        write_run_config(r)
      _run_in_process(r)
  if not lead:
    return {}
  summary = gather(runs, info, s, init_from=runs[0].config.init_from, workdir=str(workdir))
  paths.atomic_write(epath.Path(workdir) / "suite.json", json.dumps(summary, indent=2) + "\n")
  return summary
