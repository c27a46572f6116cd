"""The package's layering (docs/architecture.md): each subpackage imports only the layers below
it, and nothing below the top imports a command-line module. Read from the source with `ast`,
imports inside functions included."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "bert_jax"

# What each part of bert_jax may import (besides itself).
ALLOWED = {
    "errors": set(),
    "paths": {"errors"},
    "parallel": {"errors", "paths"},
    "models": {"errors", "paths", "parallel"},
    "interop": {"errors", "paths", "parallel", "models"},
    "text": {"errors", "paths"},
    "data": {"errors", "paths", "text"},
    "training": {"errors", "paths", "parallel", "models", "interop", "text", "data"},
    "finetuning": {"errors", "paths", "parallel", "models", "interop", "text", "data",
                   "training"},
}
TOP = {"__init__", "cli", "train", "prepare", "vocab", "export", "finetune", "fill_mask",
       "inference", "finetune_suite"}


def _imported_parts(tree: ast.AST) -> set[str]:
  """The first component under bert_jax of every bert_jax module the file imports."""
  parts = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names]
                               if node.module == "bert_jax" else [])
    else:
      continue
    for name in names:
      bits = name.split(".")
      if bits[0] == "bert_jax" and len(bits) > 1:
        parts.add(bits[1])
  return parts


def _part(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE)
  return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_module_imports_only_the_layers_below_it():
  checked, wrong = 0, []
  for path in sorted(PACKAGE.rglob("*.py")):
    part = _part(path)
    if part in TOP:
      continue
    assert part in ALLOWED, f"{path}: a new part of bert_jax; give it a layer in ALLOWED"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # `from bert_jax import create_model` (the public API) reaches models and interop.
    for bad in _imported_parts(tree) - ALLOWED[part] - {part}:
      wrong.append(f"{path.relative_to(PACKAGE.parent)} imports bert_jax.{bad}")
    checked += 1
  assert checked > 30
  assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_violation():
  tree = ast.parse("def f():\n  from bert_jax.training import loop\n")
  assert _imported_parts(tree) == {"training"}
  assert "training" not in ALLOWED["models"]
