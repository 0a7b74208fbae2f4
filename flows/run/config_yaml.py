"""A config file's YAML, read within bounds, and the line of each key: what `flows.run.config` builds a run's
settings from, and what reads a run folder's `config.yaml` back (`flows.run.rundir`, `flows.run.output_folder`)
without building the settings models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dataio.errors import InputError

# Bounds on a config file (a run's config is a few dozen values): a file over MAX_CONFIG_BYTES is refused unread,
# and one whose aliases would expand it past MAX_EXPANDED_VALUES values or MAX_EXPANDED_CHARS characters of
# scalars is refused before anything is built from it. YAML aliases reuse a node, so a 1 KB file of nested
# aliases ("billion laughs") stands for 10^9 values: every later step that walks the data (the key-line map,
# pydantic, model_dump, the fingerprint's JSON) would follow every alias, for minutes and gigabytes.
MAX_CONFIG_BYTES = 1_000_000
MAX_EXPANDED_VALUES = 100_000
MAX_EXPANDED_CHARS = 10_000_000


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The YAML file at `path` within the bounds above: (its data, its node graph, for key lines).

    Parsed once (one composed node graph, constructed by PyYAML's safe constructor); InputError, one line
    naming the file, when it is not UTF-8, not YAML, too large, too deeply nested, or its aliases expand past
    the bounds or refer to a node that contains them."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise InputError(f"{size:,} bytes, over the {MAX_CONFIG_BYTES:,}-byte limit of a config file; is this "
                         f"the config? (a run's settings are a few dozen lines)", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text; re-save the config as UTF-8", path=path) from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """`read_yaml` of config text that is (or is about to be) the file `path`: errors name `path`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"not valid YAML ({problem})", path=path, line=line) from None
    except RecursionError:
        raise InputError("nested too deeply to be a config (brackets or indentation hundreds of levels deep)",
                         path=path) from None
    finally:
        loader.dispose()
    return data, node


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """InputError when `root` with its aliases expanded exceeds MAX_EXPANDED_VALUES or MAX_EXPANDED_CHARS, or
    an alias sits inside the node it names. Each node is measured once (an alias is the same node object),
    so this takes time linear in the file, whatever the aliases stand for."""
    sizes: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    aliased = [False]

    def measure(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            aliased[0] = True
            return sizes[key]
        if key in open_:
            raise InputError(f"the alias of the anchor at line {node.start_mark.line + 1} is inside the value it "
                             f"names (a recursive alias); write the value out instead", path=path)
        if isinstance(node, yaml.ScalarNode):
            size = (1, len(node.value))
        else:
            open_.add(key)
            children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                        else list(node.value))
            values, chars = 1, 0
            for child in children:
                v, c = measure(child)
                values, chars = values + v, chars + c
                if values > MAX_EXPANDED_VALUES or chars > MAX_EXPANDED_CHARS:
                    at = node.start_mark.line + 1
                    limit = f"{MAX_EXPANDED_VALUES:,} values or {MAX_EXPANDED_CHARS:,} characters"
                    if aliased[0]:
                        raise InputError(f"its aliases expand it past the limit of a config ({limit}), at the "
                                         f"value from line {at} (aliases of aliases, a 'billion laughs'?); write "
                                         f"the settings out without nesting aliases", path=path)
                    raise InputError(f"it holds more than a config may ({limit}), at the value from line {at}; "
                                     f"a run's settings are a few dozen lines (long lists belong in data files)",
                                     path=path)
            open_.discard(key)
            size = (values, chars)
        sizes[key] = size
        return size

    measure(root)


def key_lines(node: yaml.Node | None, prefix: str = "", seen: set[int] | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line where it appears in the YAML file.

    Each node is walked once: an alias is the node it names, so the keys below a second use of an anchor are
    not listed again (an error there is reported at the alias's key, its nearest listed parent)."""
    seen = set() if seen is None else seen
    lines: dict[str, int] = {}
    if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) or id(node) in seen:
        return lines
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            lines.update(key_lines(value_node, key, seen))
    else:
        for i, item in enumerate(node.value):
            key = f"{prefix}[{i}]"
            lines[key] = item.start_mark.line + 1
            lines.update(key_lines(item, key, seen))
    return lines


def line_for(lines: dict[str, int], key: str) -> int | None:
    """The line of `key`, else of its nearest parent that appears in the file."""
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""
    return None
