"""Checkpoints: saving and resuming whole runs, and reading parameters from elsewhere.

Modules (each imports only those above it):
  layout.py     the leaf: the on-disk layout (WORKDIR/checkpoints/<step>/{state,meta,data}),
                the errors (`CheckpointError`, `IncompatibleCheckpointError`) and the
                comparison of a saved tree with this run's (`mismatches`).
  init_from.py  parameters from one of our checkpoints or a Hugging Face BERT directory:
                `config.init_from` (`load`) and host-side reads for export
                (`read_checkpoint`).
  manager.py    the Orbax `Checkpointer` (asynchronous saves, restore onto any mesh,
                damaged checkpoints moved aside), where a run starts
                (`restore_or_initialize`: workdir checkpoint, else init_from, else fresh)
                and the loop's save hook (`make_step_hook`).

Fine-tuning keeps no checkpoints of its own: its best model is an export
(`bert_jax/finetune/export.py`); serving artifacts and distillation teachers are read
through `interop` or `init_from.read_checkpoint`, not through the manager.

This file imports nothing (no Orbax unless a module here is used).
"""
