"""The run configs of this clone (configs/*.py), for benchmarks that build a run in-process.

    import repo_configs                       # a sibling module: benchmarks/ is the script's dir
    config = repo_configs.load("bert_large")  # configs/bert_large.py's get_config()

Config files are not part of the installed package: `python -m bert_jax.train
--config=configs/bert_large.py` reads them from a clone, and they import each other as the
`configs` package (`from configs import default`). `load` imports that package from this clone's
configs/ directory by its location (importlib), without putting the clone on sys.path: bert_jax
itself is always the installed package.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


def path(name: str) -> str:
  """configs/<name>.py of this clone (what `--config=` takes)."""
  return os.path.join(CONFIGS, f"{name}.py")


def _configs_package():
  package = sys.modules.get("configs")
  if package is None:
    spec = importlib.util.spec_from_file_location(
        "configs", os.path.join(CONFIGS, "__init__.py"), submodule_search_locations=[CONFIGS])
    package = importlib.util.module_from_spec(spec)
    sys.modules["configs"] = package
    spec.loader.exec_module(package)
  if CONFIGS not in [os.path.abspath(p) for p in getattr(package, "__path__", [])]:
    raise ImportError(f"a module named 'configs' other than {CONFIGS} is already imported")
  return package


def load(name: str):
  """configs/<name>.py's get_config() (a fresh ml_collections.ConfigDict on every call)."""
  if not os.path.exists(path(name)):
    known = sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py") and f[0] != "_")
    raise SystemExit(f"error: no config {path(name)}; the configs are {', '.join(known)}")
  _configs_package()
  return importlib.import_module(f"configs.{name}").get_config()
