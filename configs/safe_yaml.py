"""The one way a config file is read: bounded, a regular file, UTF-8, ``yaml.safe_load`` only.

Why one loader: the signals and questions configs are both user-edited and may come from a
launchpad run config or a shared checkout, so both need the same guards, and two copies had
already drifted (one checked for a regular file and UTF-8, the other did not). The guards, in
the order they run:

* the file must be a **regular file** — a directory, a FIFO or ``/dev/zero`` would block or never
  end — and at most :data:`MAX_CONFIG_BYTES`, checked *before* it is read, so an absurd file is
  never parsed;
* it must decode as **UTF-8**; the error names the byte offset;
* it is parsed with ``yaml.safe_load`` only, so nothing in it is ever evaluated: a tag such as
  ``!!python/object/apply:os.system`` is refused as a tag, with its line and column;
* a **key given twice** in one mapping is refused with both lines (plain ``safe_load`` keeps the
  last one silently, so a second ``covariates:`` under a question would replace the first unseen);
* a **YAML syntax error** names the file, line and column, e.g.
  ``questions.yaml: line 4, column 7: YAML syntax error: mapping values are not allowed here``.

Each config module keeps its own error type (``ConfigError`` for questions, ``SignalsConfigError``
for signals) by passing it as ``error``; by default :class:`YamlConfigError` is raised.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import yaml

MAX_CONFIG_BYTES = 1_000_000  # one file-size limit for every config

_UNKNOWN_TAG = re.compile(r"could not determine a constructor for the tag '([^']*)'")


class YamlConfigError(ValueError):
    """A config file that cannot be read as plain YAML; the message names the file and the spot."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a mapping key given twice (YAML 1.2 requires unique keys)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' appears twice in one mapping (first on line {first}); "
                        "remove one of them", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_config_text(path: str | Path, what: str, error: type[Exception] = YamlConfigError) -> str:
    """The text of config file ``path``: a regular file of at most MAX_CONFIG_BYTES, UTF-8.

    ``what`` names the config in messages ("signals config", "questions config").
    """
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise error(f"{p}: {st.st_size} bytes is too large for a {what} (max {MAX_CONFIG_BYTES})")
        with p.open("rb") as fh:  # bounded even if the file grew after stat
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise error(f"{p}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise error(f"{p}: more than {MAX_CONFIG_BYTES} bytes is too large for a {what} (max {MAX_CONFIG_BYTES})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_yaml(text: str, source: str, error: type[Exception] = YamlConfigError) -> object:
    """``yaml.safe_load(text)`` with unique keys; a failure becomes ``error`` naming ``source``, line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: nothing is evaluated
    except yaml.MarkedYAMLError as exc:
        raise error(_describe(exc, source)) from None
    except yaml.reader.ReaderError as exc:  # a control character: a position, not a mark
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise error(f"{source}: line {line}, column {column}: YAML syntax error: "
                    f"unacceptable character {char} ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: YAML syntax error: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # "[[[[…" a few thousand deep: refuse, do not crash the process
        raise error(f"{source}: YAML syntax error: nested too deeply") from None


def load_yaml(path: str | Path, what: str, error: type[Exception] = YamlConfigError) -> object:
    """Read (:func:`read_config_text`) and parse (:func:`parse_yaml`) one config file."""
    return parse_yaml(read_config_text(path, what, error), str(path), error)


def _describe(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}: line {mark.line + 1}, column {mark.column + 1}" if mark else source
    problem = exc.problem or exc.context or type(exc).__name__
    tag = _UNKNOWN_TAG.search(problem)
    if isinstance(exc, yaml.constructor.ConstructorError) and tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!", 1)
        return (f"{where}: not plain YAML: tag '{name}' is not allowed "
                "(YAML tags are not allowed; nothing in a config is evaluated)")
    if isinstance(exc, yaml.constructor.ConstructorError):
        return f"{where}: not plain YAML: {problem}"
    return f"{where}: YAML syntax error: {problem}"
