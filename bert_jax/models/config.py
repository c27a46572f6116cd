"""BERT configuration: sizes, presets and JSON round trips.

`BertConfig` uses HF transformers' field names, which are also google-research/bert's
`bert_config.json` names (HF kept them). A JSON written by either tool loads here, and
`to_hf_dict()` / `to_tf1_dict()` write files each tool reads back.

Activation names follow HF: "gelu" is the exact erf form (the very first released checkpoints),
"gelu_new" / "gelu_tanh" the tanh approximation (google-research/bert's modeling.py `gelu`,
the default of our presets). Note that google-research/bert's own code maps the string "gelu"
to the tanh form; HF (and we) read a released `bert_config.json`'s "gelu" as erf, which is what
those checkpoints were trained with.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

ACTIVATIONS = ("gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu", "tanh")
DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "save_dots")

# Fields google-research/bert's bert_config.json carries (also written by HF, with extras).
_TF1_FIELDS = (
    "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings",
    "num_attention_heads", "num_hidden_layers", "type_vocab_size", "vocab_size",
)
# Execution choices: not architecture, never written to HF/TF1 files.
_RUNTIME_FIELDS = ("dtype", "scan_layers", "remat_policy", "attention_impl")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture (HF/TF1 names) plus a few execution choices (dtype, scan, remat)."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu_new"  # tanh GELU, as google-research/bert's modeling.py computes it.
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  classifier_dropout: float | None = None  # None: hidden_dropout_prob (as HF).
  # Execution (not saved to HF/TF1 files):
  dtype: str = "float32"  # compute dtype; parameters are always float32.
  scan_layers: bool = False  # lax.scan over layers (one compiled body) vs unrolled (fast steps).
  remat_policy: str = "none"  # none | full | save_dots: activation rematerialisation per layer.
  attention_impl: str = "auto"  # auto | xla | cudnn | manual (see models/attention.py).

  def __post_init__(self):
    def bad(msg):
      raise ValueError(f"BertConfig: {msg}")
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        bad(f"{name} must be a positive integer, got {value!r}")
    if self.hidden_size % self.num_attention_heads:
      bad(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
          f"{self.num_attention_heads}")
    if self.hidden_act not in ACTIVATIONS:
      bad(f"hidden_act {self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
    if self.dtype not in DTYPES:
      bad(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
    if self.remat_policy not in REMAT_POLICIES:
      bad(f"remat_policy {self.remat_policy!r} is not one of {', '.join(REMAT_POLICIES)}")
    if self.attention_impl not in ("auto", "xla", "cudnn", "manual"):
      bad(f"attention_impl {self.attention_impl!r} is not one of auto, xla, cudnn, manual")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      if not 0.0 <= getattr(self, name) < 1.0:
        bad(f"{name} must be in [0, 1), got {getattr(self, name)!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  def replace(self, **changes) -> BertConfig:
    return dataclasses.replace(self, **changes)

  # ---- JSON ----------------------------------------------------------------------------------
  @classmethod
  def from_dict(cls, d: dict[str, Any], **overrides) -> BertConfig:
    """Builds a config from an HF `config.json` / TF1 `bert_config.json` / our own dict.

    Unknown keys (HF bookkeeping such as `architectures`, `model_type`) are ignored.
    """
    d = dict(d)
    if "layer_norm_epsilon" in d and "layer_norm_eps" not in d:
      d["layer_norm_eps"] = d.pop("layer_norm_epsilon")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs.update(overrides)
    if kwargs.get("dtype") is None:
      kwargs.pop("dtype", None)
    return cls(**kwargs)

  @classmethod
  def from_json_file(cls, path: str | os.PathLike, **overrides) -> BertConfig:
    from etils import epath
    path = epath.Path(path)
    try:
      d = json.loads(path.read_text())
    except FileNotFoundError:
      raise FileNotFoundError(f"{path}: no such config file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"{path}: not a valid JSON config ({e}); pass an HF config.json or a "
                       "google-research/bert bert_config.json") from None
    if not isinstance(d, dict):
      raise ValueError(f"{path}: expected a JSON object of BERT config fields")
    try:
      return cls.from_dict(d, **overrides)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path}: {e}") from None

  def to_dict(self) -> dict[str, Any]:
    """Every field, execution choices included (our own export format)."""
    return dataclasses.asdict(self)

  def to_hf_dict(self) -> dict[str, Any]:
    """An HF transformers `config.json` for BertForPreTraining."""
    d = {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUNTIME_FIELDS}
    d.update(architectures=["BertForPreTraining"], model_type="bert",
             position_embedding_type="absolute", use_cache=True)
    return d

  def to_tf1_dict(self) -> dict[str, Any]:
    """A google-research/bert `bert_config.json` (its fields only)."""
    return {k: getattr(self, k) for k in _TF1_FIELDS}


def _preset(layers: int, hidden: int, **kw) -> BertConfig:
  return BertConfig(num_hidden_layers=layers, hidden_size=hidden,
                    num_attention_heads=hidden // 64, intermediate_size=4 * hidden, **kw)


# Sizes: BERT paper (base, large) and Turc et al. 2019 "Well-Read Students Learn Better".
PRESETS: dict[str, BertConfig] = {
    "tiny": _preset(2, 128),
    "mini": _preset(4, 256),
    "small": _preset(4, 512),
    "medium": _preset(8, 512),
    "base": _preset(12, 768),
    "large": _preset(24, 1024),
}


def get_config(name: str, **overrides) -> BertConfig:
  """A preset by name (tiny, mini, small, medium, base, large) with field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
  return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
