"""Training: datasets of ``.npz`` shards, the fine-tuning loop with distillation, evaluation, checkpoints.

Transport-free and storage-free: everything here reads and writes only the
paths it is given.
"""
