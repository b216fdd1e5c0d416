"""The text side of serving: JSON requests -> model rows, model outputs -> JSON answers,
through each fine-tuning task's own text side (`data_pipeline.finetune.tasks`)."""
