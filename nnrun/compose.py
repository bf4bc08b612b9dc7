"""Config files made of other config files: the `defaults:` key, and reading YAML files within limits.

A config file may name other config files at its top under `defaults:`, one path or a list of paths, each
relative to the folder of the file that names it. `compose_file(path)` composes the file:

1. each file in `defaults` is composed the same way (its own `defaults` first), and they are merged in the
   order listed;
2. the file's own keys are merged over that.

Merging: mappings merge key by key at every depth, the later value winning; every other value (a list such as
`model.hidden` or `loss.tree`, a number, a name, null) replaces the earlier one whole, so lists are never
concatenated, and a key is overridden, never removed. `--set` overrides come after composition
(`nnrun.config.load_config`), so they win over every file. Only the top level of a file may hold `defaults`.

Every value keeps its origin (an `OriginTree`): the chain of files from the one that set it up to the file
composed, so that a validation error names the file a bad value or an unknown key came from
(`origin_note`). A missing file, a cycle (a.yaml includes b.yaml includes a.yaml), a chain deeper than
`MAX_DEPTH` files, more than `MAX_FILES` files, a file that does not hold a mapping and a `defaults` value that
is not a path or a list of distinct paths are each one `UserInputError` naming the file, the `defaults` entry
and the files that included it. Every file is read within `nnrun.safeyaml`'s limits, and the files of one
config share them: `MAX_TOTAL_BYTES` of text and `safeyaml.MAX_NODES` nodes (aliases expanded) in all. A file
included twice (two bases over a common one) is read and composed once.

Why not OmegaConf (or Hydra): its merge is the same dozen lines of semantics (mappings deep, lists replaced),
but it loads YAML with its own loader (none of safeyaml's limits), treats `${...}` in any string as an
interpolation, keeps no record of which file set a value (the messages here need it) and pydantic validates
the result anyway; see docs/configs.md.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from nnrun.errors import UserInputError, echo
from nnrun.safeyaml import MAX_BYTES, MAX_NODES, YamlLimitError, load_counted

DEFAULTS_KEY = "defaults"
"""The top-level key of a config file that names the files it is composed of."""
MAX_DEPTH = 8
"""Most files in one chain of `defaults` (the config, its base, the base's base, ...)."""
MAX_FILES = 32
"""Most distinct files one config is composed of."""
MAX_TOTAL_BYTES = MAX_BYTES
"""Most bytes of YAML the files of one config hold together."""
BARE_OVERRIDE_RE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")
"""A `key=value` typed where `--set key=value` was meant (Hydra's syntax)."""

Chain = tuple[str, ...]
"""Where a value came from: the file that set it, then the file that included that one, ..., the file composed
(or a single `--set KEY` item)."""
OriginTree = dict[str, Union["OriginTree", Chain]]
"""The origins of a mapping's values, mirroring it: a nested mapping's keys map to their own tree, every other
value to its `Chain`. Keys are compared as text (`model.layers.1` is the key 1 or '1')."""


@dataclass(frozen=True)
class ConfigSource:
    """One file a config was composed of: `path` as the user sees it (the top file as given, a base joined
    onto the folder of the file that named it), the sha256 of its bytes and the files that included it,
    nearest first (empty for the top file)."""

    path: str
    sha256: str
    included_by: tuple[str, ...] = ()

    def describe(self) -> str:
        """`configs/base/x.yaml (included by configs/a.yaml)`."""
        return describe_chain((self.path, *self.included_by))

    def as_json(self) -> dict[str, Any]:
        """The record `provenance.json` keeps under `config_files`."""
        return {"path": self.path, "sha256": self.sha256, "included_by": list(self.included_by)}


@dataclass
class Composed:
    """A config file composed: its merged mapping (`defaults` removed), each value's origin and the files read
    (the top file first, then its bases in the order first read)."""

    raw: dict[str, Any] = field(default_factory=dict)
    origins: OriginTree = field(default_factory=dict)
    sources: list[ConfigSource] = field(default_factory=list)

    def set_origin(self, key: str, chain: Chain) -> None:
        """Record that the dotted `key` (and everything under it) now comes from `chain` (a `--set` item)."""
        node = self.origins
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = chain


def describe_chain(chain: Chain) -> str:
    """`a.yaml (included by b.yaml, included by c.yaml)` for the chain `(a.yaml, b.yaml, c.yaml)`."""
    return chain[0] + included_by(chain[1:])


def included_by(includers: Chain) -> str:
    """` (included by b.yaml, included by c.yaml)`, or nothing for no includers."""
    return f" (included by {', included by '.join(includers)})" if includers else ""


def read_mapping(path: Path, what: str = "config file", *, max_nodes: int = MAX_NODES,
                 max_bytes: int = MAX_BYTES, limit_note: str = "") -> tuple[dict[str, Any], bytes, int]:
    """The YAML mapping in `path` (read within `nnrun.safeyaml`'s limits, at most `max_nodes` nodes and
    `max_bytes` bytes), its bytes and the nodes it expands to; a missing, oversized or malformed file is a
    `UserInputError` naming it (`what`: how messages call it; `limit_note` ends a message about a limit)."""
    if not path.is_file():
        hint = ""
        if BARE_OVERRIDE_RE.match(str(path)):
            hint = f"; to override a config value write --set {path}"
        raise UserInputError(f"{what} not found: {path}{hint}")
    try:
        size = path.stat().st_size
        data = path.read_bytes() if size <= max_bytes else b""
        if size > max_bytes or len(data) > max_bytes:  # (or grew since stat)
            raise UserInputError(f"{what} {path} is {max(size, len(data))} bytes; a config is at most {max_bytes} "
                                 f"bytes{limit_note}")
        raw, nodes = load_counted(data.decode("utf-8"), max_nodes)
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"cannot read {what} {path}: {e}") from None
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        note = limit_note if isinstance(e, YamlLimitError) else ""
        raise UserInputError(f"{what} {path} is not valid YAML{where}: {problem}{note}") from None
    if raw is None:
        return {}, data, nodes
    if not isinstance(raw, dict):
        raise UserInputError(f"{what} {path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw, data, nodes


def read_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """The YAML mapping in `path`, read within `nnrun.safeyaml`'s limits (see `read_mapping`); `defaults` is
    not composed (`compose_file` does)."""
    return read_mapping(path, what)[0]


def compose_file(path: str | Path, what: str = "config file") -> Composed:
    """`path` composed with the files its `defaults` name (module docstring); `what` names the top file in
    messages. Problems are one `UserInputError` naming the file, the key and the chain of files."""
    return _Composer(what).compose(Path(path), str(path), ())


class _Composer:
    """One composition: the files read so far (each composed once) and the shared byte and node budgets."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.done: dict[Path, tuple[dict[str, Any], OriginTree]] = {}
        self.sources: list[ConfigSource] = []
        self.bytes = 0
        self.nodes = 0

    def compose(self, path: Path, shown: str, stack: tuple[tuple[Path, str], ...]) -> Composed:
        raw, origins = self._compose(path, shown, stack)
        return Composed(raw, origins, self.sources)

    def _compose(self, path: Path, shown: str,
                 stack: tuple[tuple[Path, str], ...]) -> tuple[dict[str, Any], OriginTree]:
        """`path` composed; `shown`: its name in messages; `stack`: the files including it, top file first.
        The origins' chains end with `shown`."""
        includers = tuple(name for _, name in reversed(stack))
        resolved = _resolved(path, self._name(shown, includers))
        if resolved in self.done:
            return self.done[resolved]
        if len(self.done) + len(stack) >= MAX_FILES:
            raise UserInputError(f"{self._name(shown, includers)}: a config is composed of at most {MAX_FILES} "
                                 "files (through defaults)")
        raw, data, _ = self._read(path, shown, includers)
        self.sources.append(ConfigSource(shown, hashlib.sha256(data).hexdigest(), includers))
        entries = self._defaults(raw.pop(DEFAULTS_KEY, None), path, shown, includers)
        merged: dict[str, Any] = {}
        origins: OriginTree = {}
        inner = (*stack, (resolved, shown))
        for entry, base, base_shown in entries:
            where = f"{self._name(shown, includers)}: defaults: {echo(entry)}"
            cycle = [name for p, name in inner if p == _resolved(base, where)]
            if cycle:
                names = [name for _, name in inner]
                loop = " -> ".join([*names[names.index(cycle[0]):], base_shown])
                raise UserInputError(f"{where} makes a cycle ({loop}); a config cannot include itself, directly "
                                     "or through other files")
            if len(inner) >= MAX_DEPTH:
                chain = " -> ".join([*(name for _, name in inner), base_shown])
                raise UserInputError(f"{where}: defaults nest more than {MAX_DEPTH} files deep ({chain}); "
                                     "include the deeper files directly")
            if not _is_file(base, where):
                hint = ""
                if not base.suffix and _is_file(base.with_suffix(".yaml"), where):
                    hint = f"; did you mean {entry + '.yaml'!r}?"
                raise UserInputError(f"{where}: {echo(base_shown)[1:-1]} not found (a path in defaults is relative "
                                     f"to the folder of the file that names it){hint}")
            base_raw, base_origins = self._compose(base, base_shown, inner)
            merge(merged, origins, base_raw, extend(base_origins, shown))
        merge(merged, origins, raw, origins_of(raw, (shown,)))
        self.done[resolved] = (merged, origins)
        return merged, origins

    def _read(self, path: Path, shown: str, includers: Chain) -> tuple[dict[str, Any], bytes, int]:
        what = self.what if not includers else "config file"
        left_bytes, left_nodes = MAX_TOTAL_BYTES - self.bytes, MAX_NODES - self.nodes
        shared = ""
        if self.bytes or self.nodes:
            shared = (f" (the files of one config share {MAX_TOTAL_BYTES} bytes and {MAX_NODES} values, and the "
                      f"files read before this one hold {self.bytes} bytes and {self.nodes} values)")
        try:
            raw, data, nodes = read_mapping(path, what, max_nodes=left_nodes, max_bytes=left_bytes,
                                            limit_note=shared)
        except UserInputError as e:
            raise UserInputError(f"{e}{included_by(includers)}") from None
        self.bytes += len(data)
        self.nodes += nodes
        return raw, data, nodes

    def _defaults(self, value: Any, path: Path, shown: str, includers: Chain) -> list[tuple[str, Path, str]]:
        """The entries of a `defaults` value: (as written, path, name shown), checked."""
        if value is None:
            return []
        where = f"{self._name(shown, includers)}: defaults"
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
            raise UserInputError(f"{where}: expected the path of a config file or a list of paths (relative to "
                                 f"this file's folder), got {echo(value)}")
        entries = []
        seen: dict[Path, str] = {}
        for item in items:
            base = Path(item) if Path(item).is_absolute() else path.parent / item
            base_shown = item if Path(item).is_absolute() else os.path.normpath(os.path.join(os.path.dirname(shown),
                                                                                             item))
            key = Path(os.path.normpath(base.absolute()))
            if key in seen:
                raise UserInputError(f"{where}: {echo(item)} is listed twice (as {echo(seen[key])} too); list each "
                                     "file once")
            seen[key] = item
            entries.append((item, base, base_shown))
        return entries

    @staticmethod
    def _name(shown: str, includers: Chain) -> str:
        return describe_chain((shown, *includers))


def _is_file(path: Path, name: str) -> bool:
    """Whether `path` is a file; a path the system refuses to look up (too long) is a `UserInputError`."""
    try:
        return path.is_file()
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read {name}: {getattr(e, 'strerror', None) or e}") from None


def _resolved(path: Path, name: str) -> Path:
    """`path` with symbolic links and `..` resolved (how files are told apart); a path that cannot be (a link
    loop, a NUL byte) is a `UserInputError` naming it as `name`."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise UserInputError(f"cannot read {name}: {e}") from None


def origins_of(value: Any, chain: Chain) -> OriginTree | Chain:
    """The origin tree of `value`, every value in it set by `chain`."""
    if isinstance(value, dict) and value:
        return {str(k): origins_of(v, chain) for k, v in value.items()}
    return chain


def extend(tree: OriginTree | Chain, name: str) -> OriginTree | Chain:
    """`tree` with `name` (the file that included the one it describes) appended to every chain."""
    if isinstance(tree, dict):
        return {k: extend(v, name) for k, v in tree.items()}
    return (*tree, name)


def merge(target: dict[Any, Any], target_origins: OriginTree, over: dict[Any, Any],
          over_origins: OriginTree | Chain) -> None:
    """Merge `over` into `target` in place (mappings key by key, any other value replaced whole, copied), and
    its origins into `target_origins`."""
    for key, value in over.items():
        origin = over_origins.get(str(key), ()) if isinstance(over_origins, dict) else over_origins
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            if not isinstance(target_origins.get(str(key)), dict):
                target_origins[str(key)] = {}
            merge(current, target_origins[str(key)], value, origin)  # type: ignore[arg-type]
        else:
            target[key] = _copy(value)
            target_origins[str(key)] = _copy_tree(origin)


def _copy(value: Any) -> Any:
    """A copy of a YAML value (mappings and lists copied; a YAML alias becomes two separate values)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _copy_tree(tree: OriginTree | Chain) -> OriginTree | Chain:
    return {k: _copy_tree(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def origin_at(origins: OriginTree, loc: tuple[Any, ...]) -> OriginTree | Chain | None:
    """The origin of the value at `loc` (a validation error's location): its chain, the tree of a section, or
    None when no file set it (a default)."""
    node: OriginTree | Chain = origins
    for part in loc:
        if not isinstance(node, dict):
            return node  # a value above `loc` (a list, a scalar where a section belongs) was set here
        child = node.get(str(part))
        if child is None:
            return None
        node = child
    return node


def chains_under(node: OriginTree | Chain) -> list[Chain]:
    """The distinct chains in `node`, in first-seen order."""
    if not isinstance(node, dict):
        return [node]
    found: dict[Chain, None] = {}
    for child in node.values():
        found.update(dict.fromkeys(chains_under(child)))
    return list(found)


DOTTED_KEY_RE = re.compile(r"\b([a-z_]+(?:\.[A-Za-z0-9_]+)+)")
"""A dotted config key inside a message (`optim.warmup_epochs=3`, `preprocess.center`)."""
MAX_ORIGINS_SHOWN = 3
"""Files a note names at most."""


def origin_note(origins: OriginTree, loc: tuple[Any, ...], message: str) -> str:
    """`; set in configs/base/x.yaml, included by configs/a.yaml`: where the value at `loc` came from, when that
    is a file other than the one composed (an error about the composed file's own keys, or a `--set`, needs no
    note). For an error about a whole section or several keys (`loc` a section or the top level), where the dotted
    keys that `message` names came from, else the section's keys."""
    node = origin_at(origins, loc)
    if node is None and loc:
        return ""
    if isinstance(node, tuple):
        return f"; set in {_set_in(node)}" if len(node) > 1 else ""
    groups: dict[Chain, list[str]] = {}
    for key in dict.fromkeys(DOTTED_KEY_RE.findall(message)):
        found = origin_at(origins, tuple(key.split(".")))
        if isinstance(found, tuple) and len(found) > 1:
            groups.setdefault(found, []).append(key)
    if groups:
        return "".join(f"; {', '.join(keys)} set in {_set_in(chain)}"
                       for chain, keys in list(groups.items())[:MAX_ORIGINS_SHOWN])
    if not loc or node is None:
        return ""
    chains = [c for c in chains_under(node) if len(c) > 1]
    if not chains:
        return ""
    more = " and others" if len(chains) > MAX_ORIGINS_SHOWN else ""
    return f"; its keys set in {'; '.join(_set_in(c) for c in chains[:MAX_ORIGINS_SHOWN])}{more}"


def _set_in(chain: Chain) -> str:
    """`a.yaml, included by b.yaml, included by c.yaml`."""
    return ", included by ".join(chain)
