"""Model configurations of both families (BERT, ModernBERT): sizes, presets, JSON round trips.

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


def _check_sizes(config, extra: tuple[str, ...], bad) -> None:
  """Both families' shape fields (and `extra`) are positive integers; heads divide the width."""
  for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings") + extra:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      bad(f"{name} must be a positive integer, got {value!r}")
  if config.hidden_size % config.num_attention_heads:
    bad(f"hidden_size {config.hidden_size} is not divisible by num_attention_heads "
        f"{config.num_attention_heads}")


def _check_execution(config, bad) -> None:
  """The execution fields both families have (dtype, remat_policy, attention_impl)."""
  if config.dtype not in DTYPES:
    bad(f"dtype {config.dtype!r} is not one of {', '.join(DTYPES)}")
  if config.remat_policy not in REMAT_POLICIES:
    bad(f"remat_policy {config.remat_policy!r} is not one of {', '.join(REMAT_POLICIES)}")
  if config.attention_impl not in ATTENTION_IMPLS:
    bad(f"attention_impl {config.attention_impl!r} is not one of {', '.join(ATTENTION_IMPLS)}")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture (HF/TF1 names) plus a few execution choices (dtype, scan, remat)."""

  model_type = "bert"  # the family (HF's model_type); a class attribute, not a field

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
  attention_impl: str = "auto"  # auto | xla | cudnn | splash | manual (models/attention.py).

  def __post_init__(self):
    def bad(msg):
      raise ValueError(f"BertConfig: {msg}")
    _check_sizes(self, ("type_vocab_size",), bad)
    if self.hidden_act not in ACTIVATIONS:
      bad(f"hidden_act {self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
    _check_execution(self, bad)
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
    return _from_json_file(cls, path, overrides)

  def to_dict(self) -> dict[str, Any]:
    """Every field, execution choices included (our own export format)."""
    return dataclasses.asdict(self)  # no model_type: exports before ModernBERT lack it too

  def to_hf_dict(self) -> dict[str, Any]:
    """An HF transformers `config.json` for BertForPreTraining."""
    d = {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUNTIME_FIELDS}
    d.update(architectures=["BertForPreTraining"], model_type="bert",
             position_embedding_type="absolute", use_cache=True)
    return d

  def to_tf1_dict(self) -> dict[str, Any]:
    """A google-research/bert `bert_config.json` (its fields only)."""
    return {k: getattr(self, k) for k in _TF1_FIELDS}


_MODERNBERT_RUNTIME = _RUNTIME_FIELDS
# ModernBertConfig fields HF's ModernBertConfig does not have under the same name: written to
# config.json in HF's own form (layer_types, rope_parameters) instead.
_MODERNBERT_DERIVED = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta")


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
  """ModernBERT (Warner et al. 2024) with HF transformers' `ModernBertConfig` field names, plus
  the execution choices BertConfig has. Layer i is global (full attention, RoPE θ
  global_rope_theta) when i % global_attn_every_n_layers == 0, else local: a sliding window of
  `local_attention` tokens (local_attention // 2 each side), RoPE θ local_rope_theta."""

  model_type = "modernbert"

  vocab_size: int = 50368
  hidden_size: int = 768
  intermediate_size: int = 1152  # GLU width: Wi projects to 2 × this (input and gate)
  num_hidden_layers: int = 22
  num_attention_heads: int = 12
  hidden_activation: str = "gelu"
  max_position_embeddings: int = 8192
  initializer_range: float = 0.02
  initializer_cutoff_factor: float = 2.0
  norm_eps: float = 1e-5
  norm_bias: bool = False
  pad_token_id: int = 50283
  eos_token_id: int = 50282
  bos_token_id: int = 50281
  cls_token_id: int = 50281
  sep_token_id: int = 50282
  global_rope_theta: float = 160_000.0
  local_rope_theta: float = 10_000.0
  global_attn_every_n_layers: int = 3
  local_attention: int = 128
  attention_bias: bool = False
  attention_dropout: float = 0.0
  embedding_dropout: float = 0.0
  mlp_bias: bool = False
  mlp_dropout: float = 0.0
  decoder_bias: bool = True
  classifier_pooling: str = "cls"  # cls | mean (over the attention mask)
  classifier_dropout: float = 0.0
  classifier_bias: bool = False
  classifier_activation: str = "gelu"
  # Execution (not saved to HF files):
  dtype: str = "float32"
  scan_layers: bool = False
  remat_policy: str = "none"
  attention_impl: str = "auto"

  def __post_init__(self):
    def bad(msg):
      raise ValueError(f"ModernBertConfig: {msg}")
    _check_sizes(self, ("global_attn_every_n_layers", "local_attention"), bad)
    if self.head_dim % 2:
      bad(f"head size {self.head_dim} must be even for RoPE")
    if self.local_attention % 2:
      bad(f"local_attention {self.local_attention} must be even (the window is "
          "local_attention // 2 tokens each side)")
    for name in ("hidden_activation", "classifier_activation"):
      if getattr(self, name) not in ACTIVATIONS:
        bad(f"{name} {getattr(self, name)!r} is not one of {', '.join(ACTIVATIONS)}")
    if self.classifier_pooling not in ("cls", "mean"):
      bad(f"classifier_pooling {self.classifier_pooling!r} is not one of cls, mean")
    _check_execution(self, bad)
    for name in ("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        bad(f"{name} must be in [0, 1), got {getattr(self, name)!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def sliding_window(self) -> int:
    """How far a local layer's token sees on each side (HF's `sliding_window`)."""
    return self.local_attention // 2

  def is_global(self, layer: int) -> bool:
    return layer % self.global_attn_every_n_layers == 0

  @property
  def layer_types(self) -> list[str]:
    return ["full_attention" if self.is_global(i) else "sliding_attention"
            for i in range(self.num_hidden_layers)]

  # BertConfig's names for what both families have, so family-agnostic code reads one name.
  @property
  def attention_probs_dropout_prob(self) -> float:
    return self.attention_dropout

  @property
  def hidden_act(self) -> str:
    return self.hidden_activation

  def replace(self, **changes) -> ModernBertConfig:
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_dict(cls, d: dict[str, Any], **overrides) -> ModernBertConfig:
    """From an HF ModernBERT config.json (either transformers' v4 fields
    global_rope_theta / local_rope_theta / global_attn_every_n_layers or v5's rope_parameters /
    layer_types) or our own dict. Unknown keys are ignored."""
    d = dict(d)
    rope = d.get("rope_parameters") or {}
    if "full_attention" in rope and "rope_theta" in rope["full_attention"]:
      d.setdefault("global_rope_theta", rope["full_attention"]["rope_theta"])
    if "sliding_attention" in rope and "rope_theta" in rope["sliding_attention"]:
      d.setdefault("local_rope_theta", rope["sliding_attention"]["rope_theta"])
    for part in ("full_attention", "sliding_attention"):
      kind = (rope.get(part) or {}).get("rope_type", "default")
      if kind != "default":
        raise ValueError(f"rope_parameters.{part}.rope_type={kind!r} is not supported (only "
                         "'default' RoPE)")
    types = d.get("layer_types")
    if types and "global_attn_every_n_layers" not in d:
      n = next((i for i, t in enumerate(types) if i and t == "full_attention"), len(types))
      d["global_attn_every_n_layers"] = n
      expected = ["full_attention" if i % n == 0 else "sliding_attention"
                  for i in range(len(types))]
      if list(types) != expected:
        raise ValueError("layer_types is not 'full_attention' every n-th layer from layer 0; "
                         "only that pattern is supported")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names and v is not None}
    for k in ("global_rope_theta", "local_rope_theta"):
      if k in kwargs:
        kwargs[k] = float(kwargs[k])
    kwargs.update(overrides)
    return cls(**kwargs)

  @classmethod
  def from_json_file(cls, path, **overrides) -> ModernBertConfig:
    return _from_json_file(cls, path, overrides)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["model_type"] = self.model_type
    return d

  def to_hf_dict(self) -> dict[str, Any]:
    """An HF transformers `config.json` for ModernBertForMaskedLM (v5 fields, plus v4's
    global/local RoPE θ and global_attn_every_n_layers so older versions read it too)."""
    d = {k: v for k, v in dataclasses.asdict(self).items() if k not in _MODERNBERT_RUNTIME}
    d.update(architectures=["ModernBertForMaskedLM"], model_type="modernbert",
             layer_types=self.layer_types, tie_word_embeddings=True,
             rope_parameters={
                 "full_attention": {"rope_type": "default", "rope_theta": self.global_rope_theta},
                 "sliding_attention": {"rope_type": "default",
                                       "rope_theta": self.local_rope_theta}})
    return d


ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash", "manual")
CONFIG_CLASSES = {"bert": BertConfig, "modernbert": ModernBertConfig}
ModelConfig = BertConfig | ModernBertConfig


def config_class(model_type: str | None):
  """The config class of an HF `model_type` (None or absent: BERT, as TF1 files are)."""
  model_type = model_type or "bert"
  if model_type not in CONFIG_CLASSES:
    raise ValueError(f"model_type {model_type!r} is not supported; bert_jax reads "
                     f"{', '.join(CONFIG_CLASSES)}")
  return CONFIG_CLASSES[model_type]


def config_from_dict(d: dict[str, Any], **overrides) -> ModelConfig:
  """A BertConfig or ModernBertConfig from a config dict, by its `model_type`."""
  return config_class(d.get("model_type")).from_dict(d, **overrides)


def _from_json_file(cls, path, overrides):
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
    raise ValueError(f"{path}: expected a JSON object of model config fields")
  try:
    if cls is None:
      cls = config_class(d.get("model_type"))
    return cls.from_dict(d, **overrides)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from None


def config_from_json_file(path, **overrides) -> ModelConfig:
  """A model config file of either family (by its model_type; none: BERT)."""
  return _from_json_file(None, path, overrides)


def _preset(layers: int, hidden: int, **kw) -> BertConfig:
  return BertConfig(num_hidden_layers=layers, hidden_size=hidden,
                    num_attention_heads=hidden // 64, intermediate_size=4 * hidden, **kw)


# Sizes: BERT paper (base, large) and Turc et al. 2019 "Well-Read Students Learn Better".
# ModernBERT: the published base and large (answerdotai/ModernBERT-{base,large} config.json);
# tiny (4 layers: global, local, local, global) for CPU runs and tests.
PRESETS: dict[str, ModelConfig] = {
    "tiny": _preset(2, 128),
    "mini": _preset(4, 256),
    "small": _preset(4, 512),
    "medium": _preset(8, 512),
    "base": _preset(12, 768),
    "large": _preset(24, 1024),
    "modernbert_tiny": ModernBertConfig(num_hidden_layers=4, hidden_size=128,
                                        num_attention_heads=2, intermediate_size=192,
                                        max_position_embeddings=1024),
    "modernbert_base": ModernBertConfig(),
    "modernbert_large": ModernBertConfig(num_hidden_layers=28, hidden_size=1024,
                                         num_attention_heads=16, intermediate_size=2624),
}


def get_config(name: str, **overrides) -> ModelConfig:
  """A preset by name (tiny, mini, small, medium, base, large, modernbert_tiny,
  modernbert_base, modernbert_large) with field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
  return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
