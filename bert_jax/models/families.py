"""The model families and their tasks: one place that goes from a config to a model.

A config's class names its family (`BertConfig` -> models/bert.py, `ModernBertConfig` ->
models/modernbert.py); each family has a TASKS table of the same task names where it has that
head. ModernBERT has no sentence-pair head, so no "pretraining" task: it pretrains as
"masked_lm" (objective none).
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from bert_jax.models import bert, modernbert
from bert_jax.models.config import BertConfig, ModelConfig, ModernBertConfig

FAMILY_TASKS: dict[str, dict[str, Any]] = {"bert": bert.TASKS, "modernbert": modernbert.TASKS}
ALL_TASKS = tuple(dict.fromkeys(t for tasks in FAMILY_TASKS.values() for t in tasks))
# The encoder's subtree in every head model's parameters (BertFor*.bert, ModernBertFor*.model).
ENCODER_KEY = {"bert": "bert", "modernbert": "model"}


def tasks(config: ModelConfig) -> dict[str, Any]:
  """{task: model class} of the config's family."""
  return FAMILY_TASKS[config.model_type]


def pretraining_task(config: ModelConfig, objective: str) -> str:
  """The task a pretraining run with `objective` (nsp | sop | none) trains."""
  return "masked_lm" if objective == "none" else "pretraining"


def check_task(config: ModelConfig, task: str) -> None:
  if task not in ALL_TASKS:
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(ALL_TASKS)}")
  if task not in tasks(config):
    hint = ("; ModernBERT pretrains with masked_lm alone (prepare with --objective=none)"
            if task == "pretraining" else "")
    raise ValueError(f"task {task!r} does not exist for {config.model_type}; choose one of "
                     f"{', '.join(tasks(config))}{hint}")


def create_model(config: ModelConfig, task: str | None = None, *, seed: int = 0,
                 **head_kwargs) -> nnx.Module:
  """A freshly initialised model of the config's family for `task` (None: the family's
  pretraining model, BertForPreTraining or ModernBertForMaskedLM)."""
  if task is None:
    task = "masked_lm" if config.model_type == "modernbert" else "pretraining"
  check_task(config, task)
  return tasks(config)[task](config, rngs=nnx.Rngs(params=seed), **head_kwargs)


def task_of(model: nnx.Module) -> str:
  """The task name of a model instance (the inverse of create_model)."""
  for family in FAMILY_TASKS.values():
    for task, cls in family.items():
      if type(model) is cls:
        return task
  raise TypeError(f"not a bert_jax model: {type(model).__name__}")


__all__ = ["ALL_TASKS", "ENCODER_KEY", "BertConfig", "FAMILY_TASKS", "ModernBertConfig", "check_task",
           "create_model", "pretraining_task", "task_of", "tasks"]
