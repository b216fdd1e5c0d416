"""launch.benchmark_serve's last line: the ratio batching gives over batching off at the
most clients in flight, beside its ceiling (the artifact's raw rows/s over batching off's
requests/s), from the rows the benchmark measured."""
from tests.helpers import launchers


def test_the_ceiling_is_the_raw_rate_over_batching_off():
  load = [dict(max_batch=32, in_flight=8, requests_per_s=120.0),
          dict(max_batch=32, in_flight=64, requests_per_s=150.0),
          dict(max_batch=1, in_flight=8, requests_per_s=90.0),
          dict(max_batch=1, in_flight=64, requests_per_s=100.0)]
  speed = [dict(engine="artifact (jax)", rows_per_s=220.0), dict(engine="pytorch", rows_per_s=80.0)]
  with launchers.loaded("launch.benchmark_serve") as benchmark:
    line = benchmark._ceiling(load, speed)  # pylint: disable=protected-access
  assert line.startswith("at 64 in flight: batching 1.50x the throughput of batching off")
  assert line.endswith("the artifact's raw 220 rows/s on full batches over batching off's "
                       "100.0 requests/s: 2.20x")
