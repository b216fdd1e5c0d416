"""Fine-tuning, model side: one loop for every task, and what the loop is made of.

Modules:
  loop.py        `run(cfg, text)`: the fine-tuning run (load a Hugging Face BERT
                 directory, train, evaluate every epoch, keep the best model, predict);
                 `build(...)` -> `Setup`, the task model ready on a mesh (twin of the
                 pretraining loop's `train.build` -> `train.Setup`).
  config.py      `FinetuneConfig` (every option once, with its help text; the launcher's
                 flags come from it) and the `TextSide` / `EncodedData` protocols that
                 the text package's `finetune/` implements.
  tasks/         one module per task (classification, regression, token classification,
                 question answering) behind `tasks.base.Task`: head, loss, predictions,
                 scoring, HF architecture; `tasks.get(name)` is the one registry.
  export.py      fine-tuned models as transformers directories (written atomically).
  metrics.py     GLUE / CoNLL metrics in NumPy; qa_metrics.py: SQuAD and CMRC scoring.
  lora.py        LoRA adapters kept outside the model (parameter-efficient training).
  bucketing.py   length-bucketed batches: a few widths, no compute on padding.
  qa_reference.py  transformers' run_qa fine-tuning with our optimiser, the reference of
                 the QA parity benchmark (launch/benchmark_qa_parity.py), and its table.

Where new fine-tuning capabilities go:
  distillation   `finetune/distill.py`: a teacher's outputs as the loss target of the
                 same loop (`build` / `Setup`, the task's head and `predict`), the
                 teacher read through `interop` or `checkpointing.init_from`.
  serving        artifacts beside `export.py` (e.g. `finetune/serving.py`): an exported
                 model plus the task's own decoding (its `tasks/` module and the text
                 side's `decode`), never a second implementation of what a task predicts.
  suites         `finetune/suites.py`: a list of `FinetuneConfig` runs over tasks and
                 data sets, their results gathered into one table.
The text side of each (reading, encoding, decoding) goes to the text package's
`finetune/`, named as its twin here; bert_jax never imports it.

This file imports nothing, so `import bert_jax.finetune.metrics` stays light.
"""
