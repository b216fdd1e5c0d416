"""launch.suite's bad input: one `error:` line per problem, exit status 2, no traceback."""
import subprocess
import sys

from tests.helpers import REPO


def _run(*args):
  return subprocess.run([sys.executable, "-m", "launch.suite", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_a_task_without_files_and_a_bad_flag(tmp_path):
  (tmp_path / "glue").mkdir()
  common = [f"--init_from={tmp_path}/init", f"--output_dir={tmp_path}/out"]
  done = _run("--suite=glue", f"--data_dir={tmp_path}/glue", "--tasks=QNLI,CoLA", *common)
  errors = [l for l in done.stderr.splitlines() if l.startswith("error:")]
  assert done.returncode == 2, done.stderr
  assert errors == [f"error: QNLI did not run: QNLI: no folder QNLI in {tmp_path}/glue",
                    f"error: CoLA did not run: CoLA: no folder CoLA in {tmp_path}/glue"]
  assert "Traceback" not in done.stderr
  assert "| QNLI | — | — | — | yes | NOT RUN" in (tmp_path / "out" / "results.md").read_text()
  bad = _run("--suite=clue", f"--data_dir={tmp_path}/glue", "--tasks=NOPE", *common)
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith("error: CLUE: no task 'NOPE'; its tasks "
                                                        "are AFQMC, TNEWS")
  seeds = _run("--suite=clue", f"--data_dir={tmp_path}/glue", "--seeds=a", *common)
  assert seeds.returncode == 2 and "error: --seeds=a: not a list of ints" in seeds.stderr
