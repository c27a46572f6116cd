"""ModernBERT-large phase 1: configs/modernbert_base.py at the large size (28 layers, H1024)
with the recipe's lower peak rate 5e-4."""

from configs import modernbert_base


def get_config():
  c = modernbert_base.get_config()
  c.model.preset = "modernbert_large"
  c.optimizer.learning_rate = 5e-4
  return c
