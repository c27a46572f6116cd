"""One process of a two-process job (run by test_checkpointing_multiprocess.py): between
collective checkpoint saves, process 0 alone writes an Orbax export, as fine-tuning does with
its best model (WORKDIR/best). Prints the steps saved and, after each save, the Orbax
operation id (the number its multi-process signals are keyed by)."""

import sys

from absl import app, flags

from bert_jax import cli

flags.DEFINE_string("workdir", None, "Where to write the checkpoints and exports.")
flags.DEFINE_integer("rounds", 4, "Collective saves, each after a process-0-only export.")
cli.define_distributed_flags()


def main(argv):
  del argv
  cli.start_processes()
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  from bert_jax.interop import save_pretrained
  from bert_jax.models import BertConfig, create_model
  from bert_jax.training.checkpointing import Checkpointer
  # The number Orbax keys a multi-process save's signals by: it must agree across processes.
  from orbax.checkpoint._src.futures.synchronization import OperationIdGenerator

  workdir = flags.FLAGS.workdir
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  state = {"w": jax.device_put(jnp.arange(8.0), NamedSharding(mesh, P("data"))),
           "step": jax.device_put(jnp.int32(0), NamedSharding(mesh, P()))}
  config = BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
  op_ids = []
  with Checkpointer(f"{workdir}/checkpoints", max_to_keep=2) as ckpt:
    ckpt.save(0, state)
    for step in range(1, flags.FLAGS.rounds + 1):
      if jax.process_index() == 0:  # fine-tuning's _save_best: the lead process alone
        save_pretrained(create_model(config, "pretraining"), f"{workdir}/best",
                        format="orbax", overwrite=True)
      ckpt.save(step, state)
      op_ids.append(int(OperationIdGenerator.get_current_operation_id()))
    ckpt.wait()
    print("saved steps", ckpt.all_steps(), flush=True)
  print("orbax operation ids", op_ids, flush=True)


if __name__ == "__main__":
  sys.exit(app.run(main))
