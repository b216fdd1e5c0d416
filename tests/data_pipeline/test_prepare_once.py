"""prepare_once: one maker among concurrent callers; dead owners replaced; bounded waits."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from data_pipeline.prepare_once import LOCK_NAME, PreparationWaitError, Timing, prepare_once


def _quiet(msg):
  del msg


def _write_lock(directory, **owner):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, LOCK_NAME), "w") as f:
    json.dump(owner, f)


def _dead_pid():
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()
  return p.pid


def test_concurrent_callers_make_it_once(tmp_path):
  directory = str(tmp_path / "shared")
  made, results = [], []
  done = os.path.join(directory, "done")

  def make():
    made.append(threading.get_ident())
    time.sleep(0.5)  # long enough for every other caller to find the lock taken
    with open(done, "w") as f:
      f.write("x")
    return "made"

  def call():
    results.append(prepare_once(directory, lambda: os.path.exists(done), make, lambda: "reused",
                                timing=Timing(poll_s=0.05), log=_quiet))

  threads = [threading.Thread(target=call) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(30)
  assert len(made) == 1
  assert sorted(results) == ["made"] + ["reused"] * 3
  assert not os.path.exists(os.path.join(directory, LOCK_NAME))  # released


def test_a_dead_owner_on_this_host_is_replaced(tmp_path):
  directory = str(tmp_path / "shared")
  _write_lock(directory, host=socket.gethostname(), pid=_dead_pid(), started=0)
  messages = []
  assert prepare_once(directory, lambda: False, lambda: "made", lambda: "reused",
                      timing=Timing(poll_s=0.05), log=messages.append) == "made"
  assert "has exited; taking over" in messages[0]


def test_an_owner_elsewhere_that_stopped_touching_its_lock_is_replaced(tmp_path):
  directory = str(tmp_path / "shared")
  _write_lock(directory, host="some-other-host", pid=1, started=0)
  messages = []
  assert prepare_once(directory, lambda: False, lambda: "made", lambda: "reused",
                      timing=Timing(stale_after_s=0.3, poll_s=0.05),
                      log=messages.append) == "made"
  assert "some-other-host" in messages[-1] and "has not touched" in messages[-1]


def test_waiting_on_a_live_owner_is_bounded(tmp_path):
  directory = str(tmp_path / "shared")
  _write_lock(directory, host=socket.gethostname(), pid=os.getpid(), started=0)
  with pytest.raises(PreparationWaitError, match=rf"waited 0 s for process {os.getpid()} on "
                     rf"host .* to prepare the data in .*{LOCK_NAME}.*remove the lock"):
    prepare_once(directory, lambda: False, lambda: "made", lambda: "reused",
                 timing=Timing(wait_timeout_s=0.3, poll_s=0.05), log=_quiet)


def test_a_failing_owner_releases_its_claim(tmp_path):
  directory = str(tmp_path / "shared")

  def broken():
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    prepare_once(directory, lambda: False, broken, lambda: "reused", log=_quiet)
  assert prepare_once(directory, lambda: False, lambda: "made", lambda: "reused",
                      log=_quiet) == "made"
