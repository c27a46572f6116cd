"""ModernBERT in Flax NNX (Warner et al. 2024, "Smarter, Better, Faster, Longer").

Shapes: B batch, L sequence length, H hidden size, N heads, D head size (H/N), I GLU width
(intermediate_size), V vocab size, P masked positions per sequence, C classes.

Faithful to HF transformers' `ModernBert*` (tests/models/test_modernbert_parity.py):
token embedding -> LayerNorm -> dropout, no position table; pre-norm layers with bias-free
LayerNorm (layer 0 has no attention norm: the embedding norm serves), bias-free fused QKV and
output projections, RoPE on q and k (θ = global_rope_theta on global layers, local_rope_theta on
local ones), every `global_attn_every_n_layers`-th layer global and the rest a sliding window of
local_attention // 2 tokens each side, GeGLU MLP (`input, gate = Wi(x)`; `Wo(gelu(input) *
gate)`), a final norm. The MLM head is dense -> GELU -> norm, then the decoder tied to the
token embedding plus a bias; logits at the masked positions only when `masked_positions` is given
(HF's sparse_prediction). Init as HF's `ModernBertPreTrainedModel._init_weights`.

The models take BERT's call signature (token_type_ids accepted and ignored: there are no token
types), so the training and fine-tuning code drives both families the same way; their outputs
are bert.py's output classes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models.attention import Mask, make_mask, self_attention
from bert_jax.models.bert import (BertOutput, MaskedLMOutput, QuestionAnsweringOutput,
                                  SequenceClassifierOutput, TokenClassifierOutput, _REMAT_POLICIES,
                                  _rng, gather_positions)
from bert_jax.models.config import ModernBertConfig
from bert_jax.models.dropout import dropout
from bert_jax.models.layers import Dense, Embed, LayerNorm, activation, param
from bert_jax.parallel import sharding

_RNG_EMBED, _RNG_ATTN_PROBS, _RNG_ATTN_OUT, _RNG_MLP, _RNG_HEAD = 0, 1, 2, 3, 4
_ACT = ("activation_batch", "activation_length", "activation_embed")


def _dtype(config: ModernBertConfig):
  return jnp.dtype(config.dtype)


def _stds(config: ModernBertConfig) -> dict[str, float]:
  """HF's _init_weights: σ for input projections, output projections and the final classifier."""
  return {"in": config.initializer_range,
          "out": config.initializer_range / math.sqrt(2.0 * config.num_hidden_layers),
          "final_out": config.hidden_size ** -0.5}


def _norm(config: ModernBertConfig) -> LayerNorm:
  return LayerNorm(config.hidden_size, epsilon=config.norm_eps, dtype=_dtype(config),
                   use_bias=config.norm_bias)


# ---- rotary position embeddings ----------------------------------------------------------------
def rope_tables(position_ids: jax.Array, head_dim: int, theta: float
                ) -> tuple[jax.Array, jax.Array]:
  """cos, sin float32 [B|1, L, D] for positions [B|1, L] (HF's default RoPE: inverse
  frequencies θ^(-2i/D), the frequencies repeated over both halves)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [B, L, D/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array,
               heads_major: bool = False) -> jax.Array:
  """x [B, L, N, D] ([B, N, L, D] with heads_major) rotated in float32 (HF's rotate_half
  convention) by cos, sin [B, L, D]; returned in x's dtype."""
  xf = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  cos, sin = (c[:, None] if heads_major else c[:, :, None] for c in (cos, sin))
  out = xf * cos + rotated * sin
  return out.astype(x.dtype)


# ---- layers -----------------------------------------------------------------------------------
class ModernBertEmbeddings(nnx.Module):

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    self.tok_embeddings = Embed(config.vocab_size, config.hidden_size, ("vocab", "embed"),
                                rngs=rngs, init_std=config.initializer_range,
                                init_cutoff=config.initializer_cutoff_factor)
    self.norm = _norm(config)
    self.dropout_rate = config.embedding_dropout

  def __call__(self, input_ids, rng):
    x = self.norm(self.tok_embeddings(input_ids))
    x = dropout(x, self.dropout_rate, rng)
    return sharding.constrain(x, _ACT)


class ModernBertAttention(nnx.Module):
  """Fused bias-free QKV, RoPE, global or sliding-window attention, bias-free output."""

  def __init__(self, config: ModernBertConfig, layer: int, *, rngs: nnx.Rngs):
    h, n, d = config.hidden_size, config.num_attention_heads, config.head_dim
    dt, std, cut = _dtype(config), _stds(config), config.initializer_cutoff_factor
    self.wqkv = Dense([h], [3, n, d], ("embed", "qkv", "heads", "kv"), rngs=rngs,
                     init_std=std["in"], init_cutoff=cut, use_bias=config.attention_bias,
                     dtype=dt)
    self.wo = Dense([n, d], [h], ("heads", "kv", "embed"), rngs=rngs, init_std=std["out"],
                        init_cutoff=cut, use_bias=config.attention_bias, dtype=dt)
    self.window = None if config.is_global(layer) else config.sliding_window
    self.impl = config.attention_impl
    self.dropout_rate = config.attention_dropout

  def __call__(self, x, mask: Mask, rope: tuple[jax.Array, jax.Array], rng):
    rotate = lambda t, heads_major: apply_rope(t, *rope, heads_major=heads_major)
    y = self_attention(x, self.wqkv, self.wo, mask, impl=self.impl,
                       dropout_rate=self.dropout_rate, rng=_rng(rng, _RNG_ATTN_PROBS),
                       window=self.window, rotate=rotate)
    return dropout(y, self.dropout_rate, _rng(rng, _RNG_ATTN_OUT))


class ModernBertMLP(nnx.Module):
  """GeGLU: Wi [H, 2, I] (input, gate), Wo [I, H]; Wo(act(input) * gate), both bias-free."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    h, i = config.hidden_size, config.intermediate_size
    dt, std, cut = _dtype(config), _stds(config), config.initializer_cutoff_factor
    # The input/gate split is its own axis, so tensor parallelism splits I, never the halves.
    self.wi = Dense([h], [2, i], ("embed", None, "mlp"), rngs=rngs, init_std=std["in"],
                    init_cutoff=cut, use_bias=config.mlp_bias, dtype=dt)
    self.wo = Dense([i], [h], ("mlp", "embed"), rngs=rngs, init_std=std["out"],
                    init_cutoff=cut, use_bias=config.mlp_bias, dtype=dt)
    self.act = activation(config.hidden_activation)
    self.dropout_rate = config.mlp_dropout

  def __call__(self, x, rng):
    y = self.wi(x)  # [B, L, 2, I]
    y = self.act(y[:, :, 0]) * y[:, :, 1]
    y = sharding.constrain(y, ("activation_batch", "activation_length", "activation_mlp"))
    return self.wo(dropout(y, self.dropout_rate, rng))


class ModernBertLayer(nnx.Module):
  """Pre-norm: x + attn(attn_norm(x)), then + mlp(mlp_norm(x)). Layer 0: no attn_norm."""

  def __init__(self, config: ModernBertConfig, layer: int, *, rngs: nnx.Rngs):
    self.attn_norm = None if layer == 0 else _norm(config)
    self.attn = ModernBertAttention(config, layer, rngs=rngs)
    self.mlp_norm = _norm(config)
    self.mlp = ModernBertMLP(config, rngs=rngs)

  def __call__(self, x, mask, rope, rng):
    h = x if self.attn_norm is None else self.attn_norm(x)
    x = x + self.attn(h, mask, rope, rng)
    x = x + self.mlp(self.mlp_norm(x), _rng(rng, _RNG_MLP))
    return sharding.constrain(x, _ACT)


class ModernBertEncoder(nnx.Module):
  """The layers, applied unrolled or (`scan_layers`) as: layer 0, then lax.scan over groups of
  `global_attn_every_n_layers` consecutive layers (each group has the same local/global
  pattern, so one compiled group body), then any remaining layers. Same function either way."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.layers = nnx.List([ModernBertLayer(config, i, rngs=rngs)
                            for i in range(config.num_hidden_layers)])

  def __call__(self, x, mask, ropes: dict[bool, tuple], rng):
    config = self.config
    types = [config.is_global(i) for i in range(config.num_hidden_layers)]

    def layer_fn(i):
      def apply(h, state, index):
        return nnx.merge(nnx.graphdef(self.layers[i]), state)(h, mask, ropes[types[i]],
                                                                _rng(rng, index + 1))
      if config.remat_policy != "none":
        apply = jax.checkpoint(apply, policy=_REMAT_POLICIES[config.remat_policy])
      return apply

    states = [nnx.state(layer) for layer in self.layers]
    n = config.global_attn_every_n_layers
    num = config.num_hidden_layers
    groups = (num - 1) // n if config.scan_layers else 0
    x = layer_fn(0)(x, states[0], jnp.asarray(0))
    if groups:
      fns = [layer_fn(1 + j) for j in range(n)]  # layers 1..n: the pattern every group repeats

      def group(h, xs):
        group_states, first = xs
        for j in range(n):
          h = fns[j](h, group_states[j], first + j)
        return h, None

      stacked = [jax.tree.map(lambda *a: jnp.stack(a),
                              *[states[1 + g * n + j] for g in range(groups)]) for j in range(n)]
      x, _ = jax.lax.scan(group, x, (stacked, 1 + n * jnp.arange(groups)))
    for i in range(1 + groups * n, num):
      x = layer_fn(i)(x, states[i], jnp.asarray(i))
    return x


class ModernBertModel(nnx.Module):
  """Embeddings, the layers, the final norm. Returns BertOutput (pooled_output None)."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = ModernBertEmbeddings(config, rngs=rngs)
    self.encoder = ModernBertEncoder(config, rngs=rngs)
    self.final_norm = _norm(config)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None, segment_ids=None, cls_positions=None) -> BertOutput:
    """input_ids, attention_mask: [B, L] (mask 1 = token, 0 = padding); position_ids [B, L]
    (default 0..L-1). Packed rows: segment_ids [B, L] (1, 2, ... per sequence, 0 = padding)
    and position_ids restarting at 0 per sequence. token_type_ids and cls_positions are
    accepted for BERT's signature and unused."""
    del token_type_ids, cls_positions
    if not deterministic and dropout_rng is None:
      raise ValueError("deterministic=False needs dropout_rng=jax.random.key(...)")
    rng = None if deterministic else dropout_rng
    length = input_ids.shape[1]
    if length > self.config.max_position_embeddings:
      raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                       f"{self.config.max_position_embeddings} of this ModernBERT; use "
                       "shorter sequences or a context-extended model (configs/"
                       "modernbert_base_8k.py)")
    if position_ids is None:
      position_ids = jnp.arange(length, dtype=jnp.int32)[None, :]
    x = self.embeddings(input_ids, _rng(rng, 0, _RNG_EMBED))
    mask = make_mask(attention_mask, segment_ids, input_ids.shape)
    d = self.config.head_dim
    ropes = {True: rope_tables(position_ids, d, self.config.global_rope_theta),
             False: rope_tables(position_ids, d, self.config.local_rope_theta)}
    x = self.encoder(x, mask, ropes, rng)
    return BertOutput(sequence_output=self.final_norm(x), pooled_output=None)


class ModernBertPredictionHead(nnx.Module):
  """dense (bias iff classifier_bias) -> classifier_activation -> norm."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    self.dense = Dense([config.hidden_size], [config.hidden_size], ("embed", "mlp"), rngs=rngs,
                       init_std=_stds(config)["out"], init_cutoff=config.initializer_cutoff_factor,
                       use_bias=config.classifier_bias, dtype=_dtype(config))
    self.act = activation(config.classifier_activation)
    self.norm = _norm(config)

  def __call__(self, x):
    return self.norm(self.act(self.dense(x)))


def _head_rng(deterministic, dropout_rng):
  return None if deterministic or dropout_rng is None else _rng(dropout_rng, 0, _RNG_HEAD)


class ModernBertForMaskedLM(nnx.Module):
  """The encoder, the prediction head and the tied decoder (+ bias if decoder_bias)."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.model = ModernBertModel(config, rngs=rngs)
    self.head = ModernBertPredictionHead(config, rngs=rngs)
    self.decoder_bias = (param(jax.nn.initializers.zeros, None, (config.vocab_size,),
                               ("vocab",)) if config.decoder_bias else None)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               masked_positions=None, *, deterministic: bool = True,
               dropout_rng: jax.Array | None = None, position_ids=None, segment_ids=None,
               cls_positions=None) -> MaskedLMOutput:
    """masked_positions [B, P]: logits [B, P, V] at those positions only; None: [B, L, V]."""
    out = self.model(input_ids, attention_mask=attention_mask, deterministic=deterministic,
                     dropout_rng=dropout_rng, position_ids=position_ids, segment_ids=segment_ids)
    seq = out.sequence_output
    hidden = seq if masked_positions is None else gather_positions(seq, masked_positions)
    h = self.head(hidden)
    logits = self.model.embeddings.tok_embeddings.attend(h, _dtype(self.config))
    if self.decoder_bias is not None:
      logits = logits + self.decoder_bias[...]
    logits = sharding.constrain(
        logits, ("activation_batch",) + (None,) * (logits.ndim - 2) + ("activation_vocab",))
    return MaskedLMOutput(sequence_output=seq, mlm_logits=logits)


def pool(sequence: jax.Array, attention_mask: jax.Array | None, pooling: str) -> jax.Array:
  """[B, L, H] -> [B, H]: the first token ("cls") or the mean over attention_mask ("mean")."""
  if pooling == "cls":
    return sequence[:, 0]
  if attention_mask is None:
    return jnp.mean(sequence.astype(jnp.float32), axis=1).astype(sequence.dtype)
  m = attention_mask.astype(jnp.float32)[..., None]
  total = jnp.sum(sequence.astype(jnp.float32) * m, axis=1)
  return (total / jnp.maximum(jnp.sum(m, axis=1), 1.0)).astype(sequence.dtype)


def _classifier(config: ModernBertConfig, num_labels: int, rngs: nnx.Rngs) -> Dense:
  return Dense([config.hidden_size], [num_labels], ("embed", "classes"), rngs=rngs,
               init_std=_stds(config)["final_out"], init_cutoff=config.initializer_cutoff_factor,
               dtype=_dtype(config))


def _build_classifier_model(module, config: ModernBertConfig, num_outputs: int,
                            rngs: nnx.Rngs) -> None:
  """The three classifier models' parameters, named as HF's: model, head, classifier [H, C]."""
  module.config = config
  module.model = ModernBertModel(config, rngs=rngs)
  module.head = ModernBertPredictionHead(config, rngs=rngs)
  module.classifier = _classifier(config, num_outputs, rngs)


class ModernBertForSequenceClassification(nnx.Module):
  """Pool (config.classifier_pooling: cls | mean) -> head -> dropout -> classifier [H, C]
  (with bias). num_labels=1 is regression."""

  def __init__(self, config: ModernBertConfig, *, num_labels: int = 2, rngs: nnx.Rngs):
    self.num_labels = num_labels
    _build_classifier_model(self, config, num_labels, rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None) -> SequenceClassifierOutput:
    out = self.model(input_ids, attention_mask=attention_mask, deterministic=deterministic,
                     dropout_rng=dropout_rng, position_ids=position_ids)
    pooled = self.head(pool(out.sequence_output, attention_mask, self.config.classifier_pooling))
    pooled = dropout(pooled, self.config.classifier_dropout,
                     _head_rng(deterministic, dropout_rng))
    logits = self.classifier(pooled, out_dtype=jnp.float32).astype(jnp.float32)
    return SequenceClassifierOutput(logits=logits, pooled_output=pooled)


def _per_token_logits(module, input_ids, attention_mask, deterministic, dropout_rng,
                      position_ids):
  """(encoder output, float32 [B, L, C] logits): every token -> head -> dropout -> classifier,
  the path of the token-classification and QA heads."""
  out = module.model(input_ids, attention_mask=attention_mask, deterministic=deterministic,
                     dropout_rng=dropout_rng, position_ids=position_ids)
  h = dropout(module.head(out.sequence_output), module.config.classifier_dropout,
              _head_rng(deterministic, dropout_rng))
  return out, module.classifier(h, out_dtype=jnp.float32).astype(jnp.float32)


class ModernBertForTokenClassification(nnx.Module):
  """Every token -> head -> dropout -> classifier [H, C]."""

  def __init__(self, config: ModernBertConfig, *, num_labels: int = 2, rngs: nnx.Rngs):
    self.num_labels = num_labels
    _build_classifier_model(self, config, num_labels, rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None) -> TokenClassifierOutput:
    out, logits = _per_token_logits(self, input_ids, attention_mask, deterministic,
                                    dropout_rng, position_ids)
    return TokenClassifierOutput(logits=logits, sequence_output=out.sequence_output)


class ModernBertForQuestionAnswering(nnx.Module):
  """Every token -> head -> dropout -> classifier [H, 2] -> start / end logits."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    _build_classifier_model(self, config, 2, rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None) -> QuestionAnsweringOutput:
    out, logits = _per_token_logits(self, input_ids, attention_mask, deterministic,
                                    dropout_rng, position_ids)
    return QuestionAnsweringOutput(start_logits=logits[..., 0], end_logits=logits[..., 1],
                                   sequence_output=out.sequence_output)


TASKS: dict[str, Any] = {
    "masked_lm": ModernBertForMaskedLM,
    "encoder": ModernBertModel,
    "classification": ModernBertForSequenceClassification,
    "token_classification": ModernBertForTokenClassification,
    "question_answering": ModernBertForQuestionAnswering,
}
