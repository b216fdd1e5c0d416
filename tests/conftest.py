"""Test-wide setup: 8 simulated CPU devices, set before jax is first imported.

Every test sees the same 8-device CPU platform; single-device tests simply use
the default device. Multi-device tests build their own meshes over
`jax.devices()`.
"""
import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests make their own small data and never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
