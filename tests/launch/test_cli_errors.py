"""Every launcher turns a user's mistake into one `error:` line and exit status 2.

Each row is a real `python -m launch.X` with a bad flag, an unknown config field, a
missing file or directory, a bad value...: exit status 2, exactly one line starting
with `error:` that names the file, field or flag, and no traceback. All of them fail
before anything compiles; they run a few at a time to share the cores' idle moments.
A bug (any other exception) still shows its traceback and exits 1, and --verbose or
BERT_JAX_VERBOSE=1 shows the traceback of a user error too.
"""
import concurrent.futures
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO
TINY = "--config=bert_jax/configs/tiny.py:tiny"


def _cases(tmp):
  vocab = os.path.join(tmp, "vocab.txt")
  pretrain = ["launch.pretrain", TINY, f"--workdir={tmp}/run"]
  prepare = ["launch.prepare_data", f"--tokenizer={vocab}", f"--output_dir={tmp}/prepared"]
  # Launchers that import jax cost ~3 CPU-s each to start: flag-level mistakes are
  # mostly tried on the light ones.
  return [
      # (launcher and arguments, what the error line must name)
      (["launch.pretrain", "--config=bert_jax/configs/nope.py", f"--workdir={tmp}/run"],
       "bert_jax/configs/nope.py"),
      (pretrain + ["--config.modle.vocab_size=3"], "--config.modle.vocab_size=3"),
      (pretrain + ["--config.model.vocab_sizee=3"], "vocab_sizee"),
      (["launch.pretrain", "--config=bert_jax/configs/tiny.py:nosuch", f"--workdir={tmp}/run"],
       "nosuch"),
      (pretrain + ["--config.num_train_steps=0"], "config.num_train_steps=0"),
      (pretrain + ["--config.data.synthetic=True", f"--config.distill.teacher={tmp}"],
       f"teacher {tmp}: not a model directory"),
      (pretrain + [f"--config.data_dir={tmp}/no-such-data"], f"{tmp}/no-such-data"),
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
      (["launch.finetune", "--task=classification", f"--init_from={tmp}",
        f"--output_dir={tmp}/ft", f"--train_file={tmp}/train.tsv"], "eval_file"),
      (["launch.benchmark", "--config=bert_jax/configs/huge.py"], "bert_jax/configs/huge.py"),
      (["launch.benchmark_data", "--num_workers=two"], "--num_workers"),
      (["launch.benchmark_hf_flax"], "--config"),
      (["launch.scaling_benchmark", "--max_devices=abc"], "--max_devices"),
      (["launch.scaling_benchmark", "extra-argument"], "extra-argument"),
      (["launch.plot"], "WORKDIR"),
      (["launch.plot", f"{tmp}/no-such-run"], f"{tmp}/no-such-run"),
  ]


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **extra)
  for name in ("BERT_JAX_VERBOSE", "BERT_JAX_TEST_FAIL", "PYTEST_CURRENT_TEST"):
    env.pop(name, None)
  env.update(extra)
  return env


def _run(args, env):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


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


def test_user_errors_are_one_line_and_exit_2(workspace):
  cases = _cases(workspace)
  assert len(cases) >= 20
  env = _env()
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = list(pool.map(lambda case: _run(case[0], env), cases))
  problems = []
  for (args, needle), result in zip(cases, results):
    output = result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if (result.returncode != 2 or len(lines) != 1 or needle not in lines[0]
        or "Traceback" in output):
      problems.append(f"{' '.join(args)}\n  exit {result.returncode}, error lines {lines}, "
                      f"expected to name {needle!r}\n  {output[-1500:]}")
  assert not problems, "\n".join(problems)


def test_verbose_shows_the_traceback_and_a_bug_exits_1(workspace):
  case = ["launch.train_tokenizer", f"--input={workspace}/none/*.txt",
          f"--output_dir={workspace}/tok"]
  for result in (_run(case + ["--verbose"], _env()), _run(case, _env(BERT_JAX_VERBOSE="1"))):
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr and "error: no files match" in result.stderr
  # Any other exception is a bug: its traceback is shown and the status is 1.
  code = ("import sys; from launch import cli\n"
          "def main(argv):\n  raise RuntimeError('internal invariant broken')\n"
          "cli.run(main)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stderr
  assert "Traceback" in result.stderr and "RuntimeError: internal invariant broken" in result.stderr
  assert "error:" not in result.stderr
