"""The cluster launch scripts, run against stand-ins for gcloud and srun that record their calls.

No TPU or SLURM cluster is reachable here; these tests check what the scripts
would ask of them: create-or-reuse, install on every worker, the same pretrain
command on every worker, SIGTERM to stop; srun with the flags passed through.
"""

import os
import pathlib
import stat
import subprocess

from tests import helpers
REPO = pathlib.Path(helpers.REPO)


def _fake(bin_dir: pathlib.Path, name: str, body: str) -> None:
  path = bin_dir / name
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _env(tmp_path, **extra):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  log = tmp_path / "calls.log"
  # `describe` fails unless the slice "exists"; every other call is recorded and succeeds.
  _fake(bin_dir, "gcloud", f"""echo "gcloud $*" >> {log}
if [[ "$*" == *" describe "* ]]; then [[ -f {tmp_path}/exists ]]; exit $?; fi
exit 0
""")
  _fake(bin_dir, "srun", f'echo "srun $*" >> {log}\n')
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TPU_NAME="bert-v4", ZONE="us-central2-b",
             ACCELERATOR_TYPE="v4-32", WORKDIR="/gcs/b/runs/x", **extra)
  return env, log


def test_tpu_vm_up_creates_installs_starts_and_streams(tmp_path):
  env, log = _env(tmp_path)
  result = subprocess.run(["bash", "launch/tpu_vm.sh", "up", "--config=bert_jax/configs/base.py:bf16",
                           "--config.global_batch_size=4096"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  calls = log.read_text().splitlines()
  assert any("tpu-vm create bert-v4 --accelerator-type=v4-32" in c for c in calls), calls
  scp = [c for c in calls if "tpu-vm scp" in c]
  assert scp and "--worker=all" in scp[0]
  ssh_all = [c for c in calls if "tpu-vm ssh bert-v4 --worker=all" in c]
  assert any("pip install" in c for c in ssh_all)
  start = [c for c in ssh_all if "launch.pretrain" in c]
  assert len(start) == 1
  assert "--workdir=/gcs/b/runs/x --config=bert_jax/configs/base.py:bf16 --config.global_batch_size=4096" in start[0]
  assert any("--worker=0" in c and "tail" in c for c in calls)


def test_tpu_vm_reuses_an_existing_slice_and_stops_with_sigterm(tmp_path):
  env, log = _env(tmp_path)
  (tmp_path / "exists").write_text("")
  subprocess.run(["bash", "launch/tpu_vm.sh", "create"], cwd=REPO, env=env, check=True, timeout=60,
                 capture_output=True)
  subprocess.run(["bash", "launch/tpu_vm.sh", "stop"], cwd=REPO, env=env, check=True, timeout=60,
                 capture_output=True)
  calls = log.read_text()
  assert "tpu-vm create" not in calls
  assert "pkill -TERM -f 'launch.pretrain'" in calls


def test_tpu_vm_needs_its_settings(tmp_path):
  env, _ = _env(tmp_path)
  del env["TPU_NAME"]
  result = subprocess.run(["bash", "launch/tpu_vm.sh", "up"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode != 0 and "set TPU_NAME" in result.stderr


def test_slurm_script_runs_one_pretrain_per_node(tmp_path):
  env, log = _env(tmp_path, SLURM_SUBMIT_DIR=str(REPO), SLURM_JOB_ID="42", VENV=str(tmp_path / "venv"))
  del env["WORKDIR"]   # default: a folder of the submit directory named by the job id
  result = subprocess.run(["bash", "launch/slurm_pretrain.sbatch", "--config=bert_jax/configs/base.py:bf16",
                           "--config.data.data_dir=/shared/data"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  call = log.read_text()
  assert call.startswith("srun --kill-on-bad-exit=1 bash -c")
  assert f"--workdir='{REPO}/workdirs/42'" in call
  assert "--config=bert_jax/configs/base.py:bf16 --config.data.data_dir=/shared/data" in call
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" not in call   # exported, not a flag
