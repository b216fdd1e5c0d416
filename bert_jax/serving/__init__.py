"""Serving: a fine-tuned model (or the pretraining encoder) as a `jax.export` artifact
(`export_artifact`, needs the model code) and the runtime that runs one with jax alone
(`runtime`, imports neither Flax nor `bert_jax.model`)."""
