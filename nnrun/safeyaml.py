"""Bounded YAML reading: what a config file or a `--set` value may hold before anything is built from it.

`safe_load(text)` reads YAML with PyYAML's safe loader and these limits, each a
`YamlLimitError` (a `yaml.YAMLError`) naming the line: at most `MAX_BYTES` of text, nesting at
most `MAX_DEPTH` deep (checked while composing, before Python's recursion limit is near), at
most `MAX_NODES` nodes composed (counted while parsing: a 1 MiB list of half a million values
stops at the limit instead of taking seconds and hundreds of MiB to parse first) and at most
`MAX_NODES` once aliases are expanded (a 364-byte "billion laughs" is refused before any of it is
built), integers of at most `MAX_INT_DIGITS` digits (hex, binary, octal and sexagesimal literals
included: their digits are counted before conversion, the value's after), and no key twice in a
mapping (YAML would keep the last one silently).

`load_counted(text, max_nodes)` reads the same way under a smaller node budget and also returns the
nodes the document expands to, so that the files a config is composed of (`nnrun.compose`) share one
budget of `MAX_NODES`.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20
"""Largest YAML text read (1 MiB: configs are a few kB)."""
MAX_DEPTH = 64
"""Deepest nesting of sequences and mappings."""
MAX_NODES = 50_000
"""Most nodes a document may hold, and expand to with aliases counted every time they are used (configs and
study files hold hundreds; parsing 50,000 takes about 2 s)."""
MAX_INT_DIGITS = 30
"""Longest integer literal (a seed fits in 20 digits)."""
INT_PREFIXES = {"0x": "hex ", "0b": "binary ", "0o": "octal "}
"""YAML 1.1's integer prefixes, and how a message names their digits."""


class YamlLimitError(yaml.YAMLError):
    """YAML that breaks one of this module's limits; `problem` says which, `problem_mark` where."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark

    def __str__(self) -> str:
        where = f" (line {self.problem_mark.line + 1})" if self.problem_mark is not None else ""
        return f"{self.problem}{where}"


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the limits of this module."""

    def __init__(self, stream: str, max_nodes: int = MAX_NODES) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0
        self.max_nodes = max_nodes
        self.expanded = 0
        """Nodes of the document read, aliases expanded (set once it is composed)."""

    def compose_node(self, parent: Node | None, index: object) -> Node:
        self._depth += 1
        self._composed += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            if self._composed > self.max_nodes:
                raise YamlLimitError(f"holds more than {self.max_nodes} values", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            self.expanded = _expanded_size(node, {}, self.max_nodes)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor reports it
                break
            if duplicate:
                raise YamlLimitError(f"the key {str(key)[:60]!r} appears twice in one mapping; keep one",
                                     key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        """An integer of at most `MAX_INT_DIGITS` decimal digits, in any of YAML 1.1's notations (decimal, `0x`
        hex, `0b` binary, `0` octal, `1:30` sexagesimal); the literal's length is checked before it is converted,
        its value after."""
        text = str(node.value).replace("_", "").lstrip("+-")
        base = INT_PREFIXES.get(text[:2].lower(), "")
        digits = sum(ch.isalnum() for ch in (text[2:] if base else text))
        if digits > MAX_INT_DIGITS:
            raise YamlLimitError(f"an integer of {digits} {base}digits (at most {MAX_INT_DIGITS} digits)",
                                 node.start_mark)
        value = super().construct_yaml_int(node)
        if abs(value) >= 10 ** MAX_INT_DIGITS:  # 30 hex digits are 37 decimal ones
            raise YamlLimitError(f"an integer of {len(str(abs(value)))} digits (at most {MAX_INT_DIGITS})",
                                 node.start_mark)
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def _expanded_size(node: Node, memo: dict[int, int], limit: int = MAX_NODES) -> int:
    """Nodes under `node` with every alias expanded, computed once per distinct node; over `limit` raises."""
    known = memo.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, memo, limit) for child in node.value)
    elif isinstance(node, MappingNode):
        size += sum(_expanded_size(k, memo, limit) + _expanded_size(v, memo, limit) for k, v in node.value)
    if size > limit:
        raise YamlLimitError(f"expands to more than {limit} values (aliases repeat what they point to)",
                             node.start_mark)
    memo[id(node)] = size
    return size


def safe_load(text: str) -> Any:
    """The YAML document in `text`, read within this module's limits (a `yaml.YAMLError` otherwise)."""
    return load_counted(text)[0]


def load_counted(text: str, max_nodes: int = MAX_NODES) -> tuple[Any, int]:
    """The YAML document in `text` read within this module's limits, at most `max_nodes` nodes (counted while
    parsing, and again with aliases expanded), and the nodes it expands to."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"{len(text)} characters of YAML (at most {MAX_BYTES})")
    loader = BoundedLoader(text, max_nodes)
    try:
        return loader.get_single_data(), loader.expanded
    finally:
        loader.dispose()
