"""Fine-tuning, text side: files in, encoded rows out; row outputs in, predictions out.

The model side is `bert_jax/finetune/` (loop, config, metrics, `tasks/`); the launcher
(`launch/finetune.py`) hands the loop one text task from here. Modules:

  tasks/            one module per task, named as its twin in bert_jax/finetune/tasks/
                    (classification, regression, token_classification, question_answering)
                    behind `tasks/base.py`'s `TextTask` / `EncodedFile`; `tasks.make_text_task`
                    is the registry. A new task goes there (see tasks/__init__.py).
  readers.py        CSV / TSV / JSONL rows and CoNLL / JSONL tagged sentences: reading,
                    label sets, encoding into the fine-tuning batch contract.
  squad.py          SQuAD-format JSON / JSONL reading and answer checks (QA questions).
  qa_windows.py     QA windows over the contexts (run_squad's doc_stride), with each
                    token's character offsets and max-context masks.
  qa_postprocess.py QA start / end logits -> answer texts, n-best lists, v2.0 null odds.

Never imports jax.
"""
