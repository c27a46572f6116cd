"""Training: train state, pretraining objective and steps, the loop, optimizers, checkpoints,
metrics, preemption, export of a run, ahead-of-time compilation."""
