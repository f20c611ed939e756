"""Instructions per program of a compiled kernel, from its SASS and the kernel's source.

The SASS of a launch (``kernel_resources.sass``: the bundled ``nvdisasm -c -gi``) lists every
instruction under the source line it comes from, with the lines it was inlined at. Its loops are
its backward branches, and each one's branch carries the line of the ``for`` statement of
``fsc_losses/kernels/local_hn.py`` it closes (inlined helpers' loops included); the cost model
says how many times each such ``for`` runs per entry. Every instruction belongs to the innermost
SASS loop around it (software-pipelined prologues and epilogues to the loop around them).
Instructions per warp per program are then each instruction's count times the trips of the
loops around it; a branch taken by one program of a launch or by one column block in ``NC`` (``if
pid == 0``, ``if c == 0``) weighs its instructions by that share. Both sides of other branches
count. At one instruction a cycle per scheduler and no stall, that is the launch's issue bound.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fsc_losses.kernels import local_hn

SOURCE = Path(local_hn.__file__).resolve()
_LINE = re.compile(
    r'\s*//## File "(?P<file>[^"]*)", line (?P<line>\d+)(?: inlined at "[^"]*", line (?P<at>\d+))?'
)
_INSTRUCTION = re.compile(r"\s*/\*(?P<address>[0-9a-f]{4,})\*/\s+(?P<text>[^;]*);")
_LABEL = re.compile(r"^(?P<label>\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA\b.*?`?\(?(?P<label>\.L_x_\d+)")
# Branches one program of a launch takes (program 0), or one column block in NC.
RARE = {"pid == 0": "program", "c == 0": "column"}


@dataclass(frozen=True)
class Loop:
    """A ``for`` statement of the kernels' source: its function, loop variable and line."""

    function: str
    variable: str
    line: int
    body: range  # the lines of its body


@dataclass(frozen=True)
class Instruction:
    text: str
    chain: tuple[int, ...]  # source lines, innermost first, then where each was inlined


@cache
def source_structure() -> tuple[tuple[Loop, ...], tuple[tuple[range, str], ...]]:
    """The ``for`` loops of the kernels' source, and the line ranges of its rare branches (the
    ``if`` bodies of :data:`RARE`, with their kind)."""
    tree = ast.parse(SOURCE.read_text())
    loops, rare = [], []
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(function):
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
                body = range(node.body[0].lineno, node.body[-1].end_lineno + 1)
                loops.append(Loop(function.name, node.target.id, node.lineno, body))
            if isinstance(node, ast.If) and ast.unparse(node.test) in RARE:
                rare.append(
                    (range(node.body[0].lineno, node.body[-1].end_lineno + 1), RARE[ast.unparse(node.test)])
                )
    return tuple(loops), tuple(rare)


def parse(sass: str) -> tuple[list[Instruction], list[tuple[int, int]]]:
    """The instructions of a one-kernel SASS listing, and its loops as ``(first, last)``
    instruction indices (a backward branch at ``last`` to ``first``)."""
    instructions, labels, branches = [], {}, []
    chain: list[int] = []
    pending = False  # the previous line was a //## line: the next one extends the chain
    for text in sass.splitlines():
        line = _LINE.match(text)
        if line:
            # Consecutive //## lines are one chain: the line, where it was inlined, where that
            # was inlined, ... (each next line repeats the previous "inlined at").
            at = [int(line["at"])] if line["at"] else []
            if not pending:
                chain = [int(line["line"]) if Path(line["file"]).resolve() == SOURCE else -1]
            chain = chain + at
            pending = True
            continue
        pending = False
        label = _LABEL.match(text)
        if label:
            labels[label["label"]] = len(instructions)
            continue
        instruction = _INSTRUCTION.match(text)
        if instruction:
            branch = _BRANCH.search(instruction["text"])
            if branch:
                branches.append((len(instructions), branch["label"]))
            instructions.append(Instruction(instruction["text"].strip(), tuple(chain)))
    loops = [(labels[target], at) for at, target in branches if labels[target] < at]
    return instructions, loops


def _innermost(line: int, loops: tuple[Loop, ...]) -> Loop | None:
    holding = [loop for loop in loops if line in loop.body]
    return min(holding, key=lambda loop: len(loop.body)) if holding else None


def _source_loop(chain: tuple[int, ...]) -> Loop | None:
    """The ``for`` a loop's backward branch closes: the first line of the branch's inline chain
    that is a ``for`` statement's, else the innermost ``for`` around its first line."""
    loops, _ = source_structure()
    for line in chain:
        for loop in loops:
            if loop.line == line:
                return loop
    return _innermost(chain[0], loops) if chain else None


def _weight(chain: tuple[int, ...], programs: float, columns: float) -> float:
    _, rare = source_structure()
    for lines, kind in rare:
        if any(line in lines for line in chain):
            return 1.0 / (programs if kind == "program" else columns)
    return 1.0


def instructions_per_program(
    sass: str, trips: dict[tuple[str, str], float], programs: float, columns: float = 1.0
) -> tuple[float, dict[str, float]]:
    """Instructions per warp of one program, expected, and their split by loop (``function.var``,
    ``"straight"`` outside loops).

    Args:
        sass: the kernel's SASS (:func:`kernel_resources.sass`).
        trips: expected trips per entry of each source loop, by ``(function, variable)``; a SASS
            loop whose ``for`` is not there raises.
        programs: the launch's programs (``if pid == 0`` runs in one of them).
        columns: column blocks per image (``if c == 0`` runs in one of them).
    """
    instructions, loops = parse(sass)
    # Loops as nested index ranges; each instruction's innermost loop.
    loops = sorted(set(loops), key=lambda span: (span[0], -span[1]))
    owner: list[int | None] = [None] * len(instructions)
    for number, (first, last) in sorted(
        enumerate(loops), key=lambda item: item[1][1] - item[1][0], reverse=True
    ):
        for index in range(first, last + 1):
            owner[index] = number
    parent: list[int | None] = []
    for number, (first, last) in enumerate(loops):
        around = [k for k, (f, la) in enumerate(loops) if k != number and f <= first and last <= la]
        parent.append(min(around, key=lambda k: loops[k][1] - loops[k][0]) if around else None)
    # Each SASS loop is the ``for`` its backward branch comes from (the branch carries the
    # ``for`` statement's line, inlined or not).
    matched = [_source_loop(instructions[last].chain) for _, last in loops]
    for (first, last), loop in zip(loops, matched, strict=True):
        if loop is None:
            raise ValueError(f"the SASS loop at instructions {first}-{last} matches no source loop")
    factor: list[float] = []
    for number in range(len(loops)):
        loop = matched[number]
        key = (loop.function, loop.variable)
        if key not in trips:
            raise KeyError(
                f"no trip count for the loop over {loop.variable} in {loop.function} (line {loop.line})"
            )
        outer = factor[parent[number]] if parent[number] is not None else 1.0
        factor.append(outer * trips[key])
    split: Counter = Counter()
    for index, instruction in enumerate(instructions):
        number = owner[index]
        count = (1.0 if number is None else factor[number]) * _weight(instruction.chain, programs, columns)
        name = "straight" if number is None else f"{matched[number].function}.{matched[number].variable}"
        split[name] += count
    return sum(split.values()), dict(split)
