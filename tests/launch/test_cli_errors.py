"""Every launcher turns a user's mistake into one `error:` line and exit status 2.

Each row is `python -m launch.X` with a bad flag, an unknown config field, a missing
file or directory, a bad value...: exit status 2, exactly one line starting with
`error:` that names the file, field or flag, and no traceback. All of them fail before
anything compiles. The rows run in this process through `launch.cli.run`
(tests/helpers/launchers.py: a fresh interpreter importing jax costs ~3 CPU-s a row);
a few real processes check what the shell sees: the status of a jax launcher and of a
light one, the traceback of a bug (status 1), and --verbose / BERT_JAX_VERBOSE=1.
"""
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.helpers import launchers
from tests.helpers.processes import child_env

TINY = "--config=bert_jax/configs/tiny.py:tiny"


def _cases(tmp):
  vocab = os.path.join(tmp, "vocab.txt")
  pretrain = ["launch.pretrain", TINY, f"--workdir={tmp}/run"]
  qa_parity = ["launch.benchmark_qa_parity", f"--init_from={tmp}", f"--train_file={tmp}/a.txt",
               f"--eval_file={tmp}/a.txt", f"--workdir={tmp}/qa"]
  prepare = ["launch.prepare_data", f"--tokenizer={vocab}", f"--output_dir={tmp}/prepared"]
  return [
      # (launcher and arguments, what the error line must name)
      (["launch.pretrain", "--config=bert_jax/configs/nope.py", f"--workdir={tmp}/run"],
       "bert_jax/configs/nope.py"),
      (pretrain + ["--config.modle.vocab_size=3"], "--config.modle.vocab_size=3"),
      (pretrain + ["--config.model.vocab_sizee=3"], "vocab_sizee"),
      (["launch.pretrain", "--config=bert_jax/configs/tiny.py:nosuch", f"--workdir={tmp}/run"],
       "nosuch"),
      (pretrain + ["--config.num_train_steps=0"], "config.num_train_steps=0"),
      (pretrain + [f"--config.data.data_dir={tmp}/no-such-data"], f"{tmp}/no-such-data"),
      # A field's old name (before it moved under config.data) names the new one.
      (pretrain + [f"--config.data_dir={tmp}/data"], "is now config.data.data_dir"),
      (["launch.benchmark", TINY, "--config.synthetic_data=True"], "config.data.synthetic"),
      (pretrain + ["--config.data.synthetic=True", f"--config.distill.teacher={tmp}"],
       f"teacher {tmp}: not a model directory"),
      (["launch.pretrain", TINY], "--workdir"),
      (pretrain + ["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"],
       "--coordinator_address='localhost'"),
      (prepare + [f"--input={tmp}/no-such-dir/*.txt"], f"{tmp}/no-such-dir/*.txt"),
      (["launch.prepare_data", f"--tokenizer={tmp}/no-such.model", f"--input={tmp}/a.txt",
        f"--output_dir={tmp}/prepared"], f"{tmp}/no-such.model"),
      (prepare + [f"--input={tmp}/a.txt", "--text_format=xml"], "--text_format"),
      (prepare + [f"--input={tmp}/a.txt", "--no_such_flag=1"], "no_such_flag"),
      (prepare + [f"--input={tmp}/per_line.txt", "--text_format=paragraphs"],
       f"{tmp}/per_line.txt: --text_format=paragraphs"),
      (["launch.prepare_data", f"--tokenizer={vocab}", f"--input={tmp}/a.txt"], "--output_dir"),
      (["launch.train_tokenizer", f"--input={tmp}/none/*.txt", f"--output_dir={tmp}/tok"],
       f"{tmp}/none/*.txt"),
      (["launch.train_tokenizer", f"--input={tmp}/a.txt", f"--output_dir={tmp}/tok",
        "--vocab_size=many"], "--vocab_size"),
      (["launch.inspect_data", f"--data_dir={tmp}/no-such-data"], f"{tmp}/no-such-data"),
      (["launch.inspect_data", f"--data_dir={tmp}", "--pair_mode=triples"], "--pair_mode"),
      (["launch.export", f"--workdir={tmp}/no-such-run", f"--output_dir={tmp}/hf"],
       f"{tmp}/no-such-run"),
      (["launch.benchmark", "--config=bert_jax/configs/huge.py"], "bert_jax/configs/huge.py"),
      (["launch.benchmark_data", "--num_workers=two"], "--num_workers"),
      (["launch.benchmark_hf_flax"], "--config"),
      (["launch.scaling_benchmark", "--max_devices=abc"], "--max_devices"),
      (["launch.scaling_benchmark", "extra-argument"], "extra-argument"),
      (qa_parity + ["--sides=ours,pytorch"], "--sides=ours,pytorch"),
      (qa_parity + ["--seeds=0,one"], "--seeds=0,one"),
      (["launch.benchmark_qa_parity", f"--init_from={tmp}", f"--train_file={tmp}/no.json",
        f"--eval_file={tmp}/a.txt", f"--workdir={tmp}/qa"], f"--train_file={tmp}/no.json"),
      (["launch.benchmark_qa_parity", f"--init_from={tmp}", f"--train_file={tmp}/a.txt",
        f"--eval_file={tmp}/a.txt"], "--workdir"),
      (["launch.plot"], "WORKDIR"),
      (["launch.plot", f"{tmp}/no-such-run"], f"{tmp}/no-such-run"),
  ]


def _run(args, **env):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=child_env(**env),
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("cli"))
  with open(os.path.join(tmp, "vocab.txt"), "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
  with open(os.path.join(tmp, "a.txt"), "w") as f:
    f.write("a b a.\nb a b.\n\na a b.\n")
  with open(os.path.join(tmp, "per_line.txt"), "w") as f:
    f.write("a b a.\nb a b.\na a b.\n")
  with open(os.path.join(tmp, "train.tsv"), "w") as f:
    f.write("sentence\tlabel\na b\t1\n")
  return tmp


def test_user_errors_are_one_line_and_exit_2(workspace, monkeypatch):
  monkeypatch.delenv("BERT_JAX_VERBOSE", raising=False)
  cases = _cases(workspace)
  assert len(cases) >= 20
  problems = []
  for args, needle in cases:
    result = launchers.run(args[0], args[1:])
    lines = result.error_lines()
    output = result.stdout + result.stderr
    if (result.returncode != 2 or len(lines) != 1 or needle not in lines[0]
        or "Traceback" in output):
      problems.append(f"{' '.join(args)}\n  exit {result.returncode}, error lines {lines}, "
                      f"expected to name {needle!r}\n  {output[-1500:]}")
  assert not problems, "\n".join(problems)


def test_a_real_process_exits_2_with_one_error_line(workspace):
  result = _run(["launch.pretrain", TINY, f"--workdir={workspace}/run",
                 f"--config.data_dir={workspace}/data"])
  assert result.returncode == 2, result.stderr
  assert result.stderr.splitlines() == [
      f"error: --config.data_dir={workspace}/data: config.data_dir is now config.data.data_dir "
      "(--config.data.data_dir=...)"], result.stderr


def test_verbose_shows_the_traceback_and_a_bug_exits_1(workspace):
  case = ["launch.train_tokenizer", f"--input={workspace}/none/*.txt",
          f"--output_dir={workspace}/tok"]
  for result in (_run(case + ["--verbose"]), _run(case, BERT_JAX_VERBOSE="1")):
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr and "error: no files match" in result.stderr
  # Any other exception is a bug: its traceback is shown and the status is 1.
  code = ("import sys; from launch import cli\n"
          "def main(argv):\n  raise RuntimeError('internal invariant broken')\n"
          "cli.run(main)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stderr
  assert "Traceback" in result.stderr and "RuntimeError: internal invariant broken" in result.stderr
  assert "error:" not in result.stderr


def test_an_incompatible_checkpoint_lists_one_array_a_line(capsys):
  """A vocabulary change (512 -> 600 ids) mismatches six arrays: the error names each on
  its own line, under one `error:` line, exit 2."""
  import numpy as np

  from bert_jax.checkpointing import layout
  from launch import cli

  def arrays(vocab):
    names = ["params/bert/embeddings/word_embeddings/embedding", "params/cls/predictions/bias"]
    tree = {n: np.zeros((vocab, 8) if "embedding" in n else (vocab,)) for n in names}
    for moment in ("mu", "nu"):
      tree.update({n.replace("params/", f"opt_state/{moment}/"): v for n, v in list(tree.items())
                   if n.startswith("params/")})
    return tree

  lines = layout.mismatches(arrays(512), {**arrays(600)}, check_dtype=False)
  assert len(lines) == 6

  def main(argv):
    raise layout.incompatible_error("/ckpt/step_10", lines, "hint: start a new output_dir")

  with pytest.raises(SystemExit) as stop:
    cli._guarded(main)([])  # pylint: disable=protected-access
  assert stop.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[0] == "error: /ckpt/step_10 does not fit this run's model: 6 mismatched array(s):"
  assert [ln.strip() for ln in err[1:7]] == lines
  assert err[-1] == "hint: start a new output_dir"
