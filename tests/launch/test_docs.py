"""Every `python -m launch.X --flag` that README.md and docs/*.md show names a launcher and
flags that exist, and every `--config.a.b=` override a field of the config it loads.

Commands are read from fenced blocks (backslash continuations joined) and from inline code;
optional parts in brackets count too. Each launcher is imported once, in this process
(tests/helpers/launchers.py), and asked for its absl flags: no subprocess.
"""
import glob
import os
import re

from absl import flags

from tests.helpers import REPO
from tests.helpers import launchers

_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_INLINE = re.compile(r"`([^`]+)`")
_COMMAND = re.compile(r"python -m (launch\.\w+)((?:[ \t]+(?!python )[^\s`|;&#]+)*)")
_FLAG = re.compile(r"^\[?--?([\w.]+)")


def _pages():
  return [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def _commands(text):
  """(launcher, [flag arguments]) for each `python -m launch.X ...` in the page's code."""
  fenced = [block.replace("\\\n", " ") for block in _FENCE.findall(text)]
  inline = [span.replace("\n", " ") for span in _INLINE.findall(_FENCE.sub("", text))]
  found = []
  for code in fenced + inline:
    for line in code.splitlines():
      for m in _COMMAND.finditer(line):
        args = [a.strip("[]") for a in m.group(2).split()]
        found.append((m.group(1), [a for a in args if a.startswith("-")]))
  return found


def _config_fields(config, path):
  node = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return True


def _problems(module, calls):
  problems = []
  if not os.path.exists(os.path.join(REPO, *module.split(".")) + ".py"):
    return [f"{module}: no such launcher"]
  with launchers.loaded(module) as _:
    known = set(flags.FLAGS)
    for page, args in calls:
      for arg in args:
        name = _FLAG.match(arg).group(1) if _FLAG.match(arg) else None
        if name is None:
          continue
        head, _, field = name.partition(".")
        if field and head in known:
          config_arg = next((a for a in args if a.startswith(f"--{head}=")), None)
          if config_arg is None:
            continue  # the launcher's default config: checked where a file is named
          path = config_arg.split("=", 1)[1]
          config = _load(path, head)
          if config is not None and not _config_fields(config, field):
            problems.append(f"{page}: python -m {module} {arg}: the config has no field {field}")
        elif name not in known and not (name.startswith("no") and name[2:] in known):
          problems.append(f"{page}: python -m {module} {arg}: no flag --{name}")
  return problems


_CONFIGS = {}


def _load(path, flag_name):
  """The config file `path` (FILE[:variant]) as its config flag would load it."""
  if path not in _CONFIGS:
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(flag_name, None, "", flag_values=values, sys_argv=["prog"])
    try:
      values(["prog", f"--{flag_name}={os.path.join(REPO, path)}"])
      _CONFIGS[path] = values[flag_name].value
    except Exception:  # pylint: disable=broad-except
      _CONFIGS[path] = None  # a placeholder path (DIR/FILE.py): nothing to check against
  return _CONFIGS[path]


def test_every_documented_command_names_a_launcher_and_its_flags():
  calls = {}
  for page in _pages():
    with open(page, encoding="utf-8") as f:
      for module, args in _commands(f.read()):
        calls.setdefault(module, []).append((os.path.relpath(page, REPO), args))
  # The pages show the main launchers; a parse that finds none is a broken test.
  assert {"launch.pretrain", "launch.finetune", "launch.export", "launch.prepare_data",
          "launch.benchmark_qa", "launch.benchmark_packing"} <= set(calls), sorted(calls)
  problems = [p for module, module_calls in sorted(calls.items())
              for p in _problems(module, module_calls)]
  assert not problems, "\n".join(problems)


def test_the_checker_sees_a_wrong_flag_and_a_wrong_field():
  text = ("```bash\npython -m launch.pretrain --config=bert_jax/configs/tiny.py \\\n"
          "    --workdir=/tmp/x --config.data_dir=d --seq_len=3\n```\n"
          "and `python -m launch.prepare_data --nolowercase --lowercase_all`")
  calls = _commands(text)
  assert calls == [("launch.pretrain", ["--config=bert_jax/configs/tiny.py", "--workdir=/tmp/x",
                                        "--config.data_dir=d", "--seq_len=3"]),
                   ("launch.prepare_data", ["--nolowercase", "--lowercase_all"])]
  assert _problems("launch.pretrain", [("page", calls[0][1])]) == [
      "page: python -m launch.pretrain --config.data_dir=d: the config has no field data_dir",
      "page: python -m launch.pretrain --seq_len=3: no flag --seq_len"]
  assert _problems("launch.prepare_data", [("page", calls[1][1])]) == [
      "page: python -m launch.prepare_data --lowercase_all: no flag --lowercase_all"]
  assert _problems("launch.no_such", []) == ["launch.no_such: no such launcher"]
