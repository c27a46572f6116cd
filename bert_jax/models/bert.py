"""BERT in Flax NNX: encoder, pretraining heads (MLM + NSP, or MLM alone) and fine-tuning heads.

Shapes: B batch, L sequence length, H hidden size, N heads, D head size (H/N), I intermediate
size, V vocab size, P masked positions per sequence, C classes.

Faithful to google-research/bert modeling.py: post-LN layers, LayerNorm epsilon 1e-12,
truncated-normal(0.02) init, pooler = dense + tanh on [CLS], NSP = [H, 2] on the pooled output,
MLM head = gather masked positions, dense + activation + LayerNorm, tied word embeddings plus a
separate output bias. Numerically equal to HF transformers' BertFor* on the same weights
(tests/models/test_hf_parity.py).

Dropout is functional: pass `deterministic=False, dropout_rng=key`; layer i draws from
`fold_in(dropout_rng, i)`, so scanned and unrolled layers drop the same units.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models.attention import make_mask, self_attention
from bert_jax.models.config import BertConfig
from bert_jax.models.dropout import dropout
from bert_jax.models.layers import Dense, Embed, LayerNorm, activation, param
from bert_jax.parallel import sharding

# Distinct RNG streams inside a layer (fold_in constants).
_RNG_EMBED, _RNG_ATTN_PROBS, _RNG_ATTN_OUT, _RNG_FFN_OUT, _RNG_HEAD = 0, 1, 2, 3, 4


# ---- outputs ----------------------------------------------------------------------------------
@flax.struct.dataclass
class BertOutput:
  sequence_output: jax.Array  # [B, L, H] compute dtype
  pooled_output: jax.Array | None  # [B, H] (None for heads built without the pooler)


@flax.struct.dataclass
class PreTrainingOutput:
  sequence_output: jax.Array  # [B, L, H]
  pooled_output: jax.Array  # [B, H]
  mlm_logits: jax.Array  # [B, P, V] with masked_positions, else [B, L, V]; float32
  nsp_logits: jax.Array  # [B, 2] float32; label 0 = IsNext, 1 = NotNext


@flax.struct.dataclass
class MaskedLMOutput:
  sequence_output: jax.Array  # [B, L, H]
  mlm_logits: jax.Array  # [B, P, V] with masked_positions, else [B, L, V]; float32


@flax.struct.dataclass
class SequenceClassifierOutput:
  logits: jax.Array  # [B, C] float32 (C = 1: regression)
  pooled_output: jax.Array  # [B, H]


@flax.struct.dataclass
class TokenClassifierOutput:
  logits: jax.Array  # [B, L, C] float32
  sequence_output: jax.Array  # [B, L, H]


@flax.struct.dataclass
class QuestionAnsweringOutput:
  start_logits: jax.Array  # [B, L] float32
  end_logits: jax.Array  # [B, L] float32
  sequence_output: jax.Array  # [B, L, H]


def _compute_dtype(config: BertConfig):
  return jnp.dtype(config.dtype)


def _rng(rng: jax.Array | None, *data: int | jax.Array) -> jax.Array | None:
  if rng is None:
    return None
  for d in data:
    rng = jax.random.fold_in(rng, d)
  return rng


# ---- encoder ----------------------------------------------------------------------------------
class BertEmbeddings(nnx.Module):

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    std, h = config.initializer_range, config.hidden_size
    self.word_embeddings = Embed(config.vocab_size, h, ("vocab", "embed"), rngs=rngs,
                                 init_std=std)
    self.position_embeddings = Embed(config.max_position_embeddings, h, ("pos", "embed"),
                                     rngs=rngs, init_std=std)
    self.token_type_embeddings = Embed(config.type_vocab_size, h, ("types", "embed"),
                                       rngs=rngs, init_std=std)
    self.layer_norm = LayerNorm(h, epsilon=config.layer_norm_eps, dtype=_compute_dtype(config))
    self.dropout_rate = config.hidden_dropout_prob

  def __call__(self, input_ids, token_type_ids, position_ids, rng):
    # [B, L] ids -> [B, L, H]; sum in float32, LayerNorm, then compute dtype.
    x = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
         + self.token_type_embeddings(token_type_ids))
    x = self.layer_norm(x)
    x = dropout(x, self.dropout_rate, rng)
    return sharding.constrain(x, ("activation_batch", "activation_length", "activation_embed"))


class BertAttention(nnx.Module):
  """Self-attention (fused QKV projection) + output dense + residual + LayerNorm."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    h, n, d = config.hidden_size, config.num_attention_heads, config.head_dim
    dt, std = _compute_dtype(config), config.initializer_range
    # kernel [H, 3, N, D]: query, key, value stacked on the `qkv` axis.
    self.qkv = Dense([h], [3, n, d], ("embed", "qkv", "heads", "kv"), rngs=rngs, init_std=std,
                     dtype=dt)
    self.output = Dense([n, d], [h], ("heads", "kv", "embed"), rngs=rngs, init_std=std, dtype=dt)
    self.layer_norm = LayerNorm(h, epsilon=config.layer_norm_eps, dtype=dt)
    self.impl = config.attention_impl
    self.probs_dropout = config.attention_probs_dropout_prob
    self.hidden_dropout = config.hidden_dropout_prob

  def __call__(self, x, mask, rng):
    y = self_attention(x, self.qkv, self.output, mask, impl=self.impl,
                       dropout_rate=self.probs_dropout, rng=_rng(rng, _RNG_ATTN_PROBS))
    y = dropout(y, self.hidden_dropout, _rng(rng, _RNG_ATTN_OUT))
    return self.layer_norm(y + x)


class BertLayer(nnx.Module):
  """One post-LN transformer layer: attention block, then feed-forward block."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    h, i = config.hidden_size, config.intermediate_size
    dt, std = _compute_dtype(config), config.initializer_range
    self.attention = BertAttention(config, rngs=rngs)
    self.intermediate = Dense([h], [i], ("embed", "mlp"), rngs=rngs, init_std=std,
                              dtype=dt)
    self.output = Dense([i], [h], ("mlp", "embed"), rngs=rngs, init_std=std,
                        dtype=dt)
    self.layer_norm = LayerNorm(h, epsilon=config.layer_norm_eps, dtype=dt)
    self.act = activation(config.hidden_act)
    self.hidden_dropout = config.hidden_dropout_prob

  def __call__(self, x, mask, rng):
    x = self.attention(x, mask, rng)
    y = self.act(self.intermediate(x))  # [B, L, I]
    y = sharding.constrain(y, ("activation_batch", "activation_length", "activation_mlp"))
    y = self.output(y)
    y = dropout(y, self.hidden_dropout, _rng(rng, _RNG_FFN_OUT))
    y = self.layer_norm(y + x)
    return sharding.constrain(y, ("activation_batch", "activation_length", "activation_embed"))


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class BertEncoder(nnx.Module):
  """num_hidden_layers layers, each its own module (parameters `layers/<i>/...`).

  Applied unrolled (default: XLA sees every layer, so it can schedule and overlap them) or
  with lax.scan over the layers' parameters stacked on the fly (`scan_layers=True`: one
  compiled layer body, so the program compiles faster, at the cost of stacking the weights
  every step). Both compute the same function from the same parameters.
  """

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.num_layers = config.num_hidden_layers
    self.scan_layers = config.scan_layers
    self.remat_policy = config.remat_policy
    self.layers = nnx.List([BertLayer(config, rngs=rngs)
                            for _ in range(config.num_hidden_layers)])

  def __call__(self, x, mask, rng):
    graphdef = nnx.graphdef(self.layers[0])  # every layer has the same structure
    states = [nnx.state(layer) for layer in self.layers]

    def body(h, layer_state, index):
      return nnx.merge(graphdef, layer_state)(h, mask, _rng(rng, index + 1))

    if self.remat_policy != "none":
      body = jax.checkpoint(body, policy=_REMAT_POLICIES[self.remat_policy])
    if self.scan_layers:
      stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
      x, _ = jax.lax.scan(lambda h, xs: (body(h, *xs), None), x,
                          (stacked, jnp.arange(self.num_layers)))
    else:
      for i, state in enumerate(states):
        x = body(x, state, jnp.asarray(i))
    return x


class BertPooler(nnx.Module):

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.dense = Dense([config.hidden_size], [config.hidden_size], ("embed", "mlp"), rngs=rngs,
                       init_std=config.initializer_range, dtype=_compute_dtype(config))

  def __call__(self, sequence_output, cls_positions=None):
    """[B, H] from the [CLS] vector at 0; with cls_positions [B, S] (packed rows), [B, S, H]
    from each packed sequence's [CLS]."""
    first = (sequence_output[:, 0] if cls_positions is None
             else gather_positions(sequence_output, cls_positions))
    return jnp.tanh(self.dense(first))


class BertModel(nnx.Module):
  """Embeddings + encoder (+ pooler). Returns BertOutput."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, add_pooling_layer: bool = True):
    self.config = config
    self.embeddings = BertEmbeddings(config, rngs=rngs)
    self.encoder = BertEncoder(config, rngs=rngs)
    self.pooler = BertPooler(config, rngs=rngs) if add_pooling_layer else None

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None, segment_ids=None, cls_positions=None) -> BertOutput:
    """input_ids, token_type_ids, attention_mask: [B, L] int (mask 1 = token, 0 = padding;
    [B, L, L] for an explicit per-query mask); position_ids: [B, L] (default 0..L-1).

    Packed rows (several sequences per row): segment_ids [B, L] (1, 2, ... per sequence,
    0 = padding) replaces attention_mask with a block-diagonal mask, position_ids restart at 0
    for each sequence, and cls_positions [B, S] makes pooled_output [B, S, H]."""
    if not deterministic and dropout_rng is None:
      raise ValueError("deterministic=False needs dropout_rng=jax.random.key(...)")
    rng = None if deterministic else dropout_rng
    _, length = input_ids.shape
    if length > self.config.max_position_embeddings:
      raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                       f"{self.config.max_position_embeddings}")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if position_ids is None:
      position_ids = jnp.arange(length, dtype=jnp.int32)[None, :]
    x = self.embeddings(input_ids, token_type_ids, position_ids, _rng(rng, 0, _RNG_EMBED))
    mask = make_mask(attention_mask, segment_ids, input_ids.shape)
    x = self.encoder(x, mask, rng)
    pooled = self.pooler(x, cls_positions) if self.pooler is not None else None
    return BertOutput(sequence_output=x, pooled_output=pooled)


def _head_rng(deterministic, dropout_rng):
  return None if deterministic or dropout_rng is None else _rng(dropout_rng, 0, _RNG_HEAD)


def gather_positions(sequence: jax.Array, positions: jax.Array) -> jax.Array:
  """[B, L, H] gathered at [B, P] positions -> [B, P, H]."""
  return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)


class BertMLMHead(nnx.Module):
  """Transform (dense + act + LayerNorm), tied decoder, separate output bias."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    dt = _compute_dtype(config)
    self.dtype = dt
    self.transform = Dense([config.hidden_size], [config.hidden_size], ("embed", "mlp"),
                           rngs=rngs, init_std=config.initializer_range, dtype=dt)
    self.layer_norm = LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, dtype=dt)
    self.act = activation(config.hidden_act)
    self.output_bias = param(jax.nn.initializers.zeros, None, (config.vocab_size,), ("vocab",))

  def __call__(self, hidden, word_embeddings: Embed):
    h = self.layer_norm(self.act(self.transform(hidden)))
    logits = word_embeddings.attend(h, self.dtype) + self.output_bias[...]
    return sharding.constrain(
        logits, ("activation_batch",) + (None,) * (logits.ndim - 2) + ("activation_vocab",))


class BertForPreTraining(nnx.Module):
  """BERT with the masked-LM and next-sentence-prediction heads."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.bert = BertModel(config, rngs=rngs)
    self.mlm = BertMLMHead(config, rngs=rngs)
    self.nsp = Dense([config.hidden_size], [2], ("embed", "classes"), rngs=rngs,
                     init_std=config.initializer_range, dtype=_compute_dtype(config))

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               masked_positions=None, *, deterministic: bool = True,
               dropout_rng: jax.Array | None = None, position_ids=None, segment_ids=None,
               cls_positions=None) -> PreTrainingOutput:
    """masked_positions: [B, P] int or None. With it, MLM logits are computed at those
    positions only ([B, P, V]); without it at every position ([B, L, V]).
    Packed rows: position_ids, segment_ids [B, L] and cls_positions [B, S] as in BertModel;
    then nsp_logits are [B, S, 2], one pair per packed sequence."""
    out = self.bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic,
                    dropout_rng=dropout_rng, position_ids=position_ids,
                    segment_ids=segment_ids, cls_positions=cls_positions)
    seq = out.sequence_output
    hidden = seq if masked_positions is None else gather_positions(seq, masked_positions)
    mlm_logits = self.mlm(hidden, self.bert.embeddings.word_embeddings)
    nsp_logits = self.nsp(out.pooled_output, out_dtype=jnp.float32).astype(jnp.float32)
    return PreTrainingOutput(sequence_output=seq, pooled_output=out.pooled_output,
                             mlm_logits=mlm_logits, nsp_logits=nsp_logits)


class BertForMaskedLM(nnx.Module):
  """BERT with the masked-LM head only (no pooler, no NSP: HF's BertForMaskedLM), for
  objectives without a sentence task (RoBERTa-style). Its `bert` and `mlm` modules are
  BertForPreTraining's (same parameter names, the same tied decoder), so parameters move
  between the two by name."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.bert = BertModel(config, rngs=rngs, add_pooling_layer=False)
    self.mlm = BertMLMHead(config, rngs=rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               masked_positions=None, *, deterministic: bool = True,
               dropout_rng: jax.Array | None = None, position_ids=None, segment_ids=None,
               cls_positions=None) -> MaskedLMOutput:
    """As BertForPreTraining: masked_positions [B, P] gives [B, P, V] logits, None [B, L, V];
    packed rows take position_ids and segment_ids [B, L]. cls_positions is accepted for the
    same call signature and unused (there is no pooler)."""
    del cls_positions
    out = self.bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic,
                    dropout_rng=dropout_rng, position_ids=position_ids,
                    segment_ids=segment_ids)
    seq = out.sequence_output
    hidden = seq if masked_positions is None else gather_positions(seq, masked_positions)
    return MaskedLMOutput(sequence_output=seq,
                          mlm_logits=self.mlm(hidden, self.bert.embeddings.word_embeddings))


def _classifier(config: BertConfig, num_labels: int, rngs: nnx.Rngs) -> tuple[Dense, float]:
  """A classification head's dense [H, C] and its input dropout rate (classifier_dropout, or
  hidden_dropout_prob when unset, as in HF)."""
  dense = Dense([config.hidden_size], [num_labels], ("embed", "classes"), rngs=rngs,
                init_std=config.initializer_range, dtype=_compute_dtype(config))
  rate = (config.hidden_dropout_prob if config.classifier_dropout is None
          else config.classifier_dropout)
  return dense, rate


class BertForSequenceClassification(nnx.Module):
  """Pooled [CLS] -> dropout -> classifier [H, C]. num_labels=1 is regression."""

  def __init__(self, config: BertConfig, *, num_labels: int = 2, rngs: nnx.Rngs):
    self.config = config
    self.num_labels = num_labels
    self.bert = BertModel(config, rngs=rngs)
    self.classifier, self.dropout_rate = _classifier(config, num_labels, rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None) -> SequenceClassifierOutput:
    out = self.bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic,
                    dropout_rng=dropout_rng, position_ids=position_ids)
    pooled = dropout(out.pooled_output, self.dropout_rate,
                     _head_rng(deterministic, dropout_rng))
    logits = self.classifier(pooled, out_dtype=jnp.float32).astype(jnp.float32)
    return SequenceClassifierOutput(logits=logits, pooled_output=out.pooled_output)


class BertForTokenClassification(nnx.Module):
  """Every token -> dropout -> classifier [H, C] (no pooler, as in HF)."""

  def __init__(self, config: BertConfig, *, num_labels: int = 2, rngs: nnx.Rngs):
    self.config = config
    self.num_labels = num_labels
    self.bert = BertModel(config, rngs=rngs, add_pooling_layer=False)
    self.classifier, self.dropout_rate = _classifier(config, num_labels, rngs)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None) -> TokenClassifierOutput:
    out = self.bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic,
                    dropout_rng=dropout_rng, position_ids=position_ids)
    seq = dropout(out.sequence_output, self.dropout_rate, _head_rng(deterministic, dropout_rng))
    logits = self.classifier(seq, out_dtype=jnp.float32).astype(jnp.float32)
    return TokenClassifierOutput(logits=logits, sequence_output=out.sequence_output)


class BertForQuestionAnswering(nnx.Module):
  """Every token -> qa_outputs [H, 2] -> start / end logits (no pooler, as in HF)."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.bert = BertModel(config, rngs=rngs, add_pooling_layer=False)
    self.qa_outputs = Dense([config.hidden_size], [2], ("embed", "classes"), rngs=rngs,
                            init_std=config.initializer_range, dtype=_compute_dtype(config))

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
               deterministic: bool = True, dropout_rng: jax.Array | None = None,
               position_ids=None) -> QuestionAnsweringOutput:
    out = self.bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic,
                    dropout_rng=dropout_rng, position_ids=position_ids)
    logits = self.qa_outputs(out.sequence_output, out_dtype=jnp.float32).astype(jnp.float32)
    return QuestionAnsweringOutput(start_logits=logits[..., 0], end_logits=logits[..., 1],
                                   sequence_output=out.sequence_output)


TASKS: dict[str, Any] = {
    "pretraining": BertForPreTraining,
    "masked_lm": BertForMaskedLM,
    "encoder": BertModel,
    "classification": BertForSequenceClassification,
    "token_classification": BertForTokenClassification,
    "question_answering": BertForQuestionAnswering,
}

