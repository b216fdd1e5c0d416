#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM slice with one command: create (or reuse) the slice,
# install this checkout on every worker, start launch.pretrain on all workers at
# once, stream worker 0's log; `stop` ends the run, `delete` the slice.
#
#   export TPU_NAME=bert-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32
#   export WORKDIR=/gcs/my-bucket/runs/base DATA_DIR=/gcs/my-bucket/data/wiki
#   launch/tpu_vm.sh up --config=bert_jax/configs/base.py:bf16 \
#       --config.data.data_dir="$DATA_DIR" --config.global_batch_size=4096
#
# Subcommands: up ARGS... (create-or-reuse + install + start + logs), create,
# install, start ARGS..., logs, stop, delete. ARGS go to launch.pretrain;
# --workdir is added from $WORKDIR.
#
# Every worker runs the same command; jax.distributed finds its peers by itself
# on a TPU VM slice (no coordinator flags). The global batch is split evenly
# over the workers. WORKDIR and DATA_DIR must be paths every worker sees the same
# way: the default mounts GCS_BUCKET with gcsfuse at /gcs on every worker.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
GCS_BUCKET=${GCS_BUCKET:-}
REMOTE_DIR=${REMOTE_DIR:-bert-jax}
LOG=${LOG:-\$HOME/bert-jax-pretrain.log}
WORKDIR=${WORKDIR:-}

tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" $PROJECT_FLAG; }
on_all() { tpu ssh "$TPU_NAME" --worker=all --command="$1"; }

create() {
  if tpu describe "$TPU_NAME" >/dev/null 2>&1; then
    echo "reusing TPU VM $TPU_NAME"
  else
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
  fi
}

install() {
  local repo archive
  repo=$(git rev-parse --show-toplevel)
  archive=$(mktemp -d)/bert-jax.tar.gz
  # The committed tree: what runs is what git knows.
  git -C "$repo" archive --format=tar.gz --prefix="$REMOTE_DIR/" HEAD >"$archive"
  tpu scp "$archive" "$TPU_NAME:~/bert-jax.tar.gz" --worker=all
  on_all "set -e; rm -rf ~/$REMOTE_DIR && tar xzf ~/bert-jax.tar.gz -C ~ \
    && python3 -m venv ~/bert-jax-venv && . ~/bert-jax-venv/bin/activate \
    && pip install -q -U pip && pip install -q 'jax[tpu]' -e ~/$REMOTE_DIR'[text]'"
  if [ -n "$GCS_BUCKET" ]; then
    on_all "set -e; command -v gcsfuse >/dev/null || { \
      export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s); \
      echo \"deb https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list; \
      curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -; \
      sudo apt-get update -q && sudo apt-get install -yq gcsfuse; }; \
      sudo mkdir -p /gcs && sudo chown \$USER /gcs; mountpoint -q /gcs || gcsfuse --implicit-dirs $GCS_BUCKET /gcs"
  fi
}

start() {
  : "${WORKDIR:?set WORKDIR (a path every worker shares, e.g. /gcs/BUCKET/runs/NAME)}"
  local args
  args=$(printf ' %q' "$@")
  # nohup + setsid: the run outlives the ssh session; one log per worker.
  on_all "cd ~/$REMOTE_DIR && . ~/bert-jax-venv/bin/activate && \
    setsid nohup python -m launch.pretrain --workdir=$WORKDIR$args >$LOG 2>&1 </dev/null &"
  echo "started on every worker of $TPU_NAME; log: $LOG"
}

logs() { tpu ssh "$TPU_NAME" --worker=0 --command="tail -n +1 -F $LOG"; }

# SIGTERM: the loop saves a checkpoint at the next step boundary and exits 0.
stop() { on_all "pkill -TERM -f 'launch.pretrain' || true"; }

delete() { tpu delete "$TPU_NAME" --quiet; }

cmd=${1:-}
shift || true
case "$cmd" in
  up) create; install; start "$@"; logs ;;
  create) create ;;
  install) install ;;
  start) start "$@" ;;
  logs) logs ;;
  stop) stop ;;
  delete) delete ;;
  *) echo "usage: $0 {up|create|install|start|logs|stop|delete} [launch.pretrain flags]" >&2; exit 2 ;;
esac
