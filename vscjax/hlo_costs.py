"""Where a compiled program's bytes and FLOPs go: one row per instruction of its optimized HLO.

XLA's ``cost_analysis()`` of an executable gives totals only. This module reads the compiled
program's HLO text (``compiled.as_text()``, the program after every optimisation: fusions,
layouts, copies) and gives, for every instruction that runs, the bytes it reads and writes
(operands plus results, as the shapes say, tiling padding not counted), the multiply-add FLOPs
of the matrix products and convolutions inside it, and, where the TPU compiler wrote one, its
own cycle estimate (``estimated_cycles``). Instructions inside a ``while`` body count once per
iteration when the compiler knows the trip count; of a ``conditional``'s branches the costliest
counts (for the train step: the branch that applies the update).

The same reading serves a TPU compile (``vscjax.aot``) and a CPU executable (the benchmarks),
so a change to the step is measured in both by one table.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s4": 0.5, "u4": 0.5, "s16": 2, "u16": 2, "f16": 2,
               "bf16": 2, "f8e4m3fn": 1, "f8e5m2": 1, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
               "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0}
# Instructions that move no data of their own: names for values, or the second half of an
# asynchronous pair whose first half is counted.
FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
        "partition-id", "replica-id", "copy-done", "slice-done", "all-reduce-done",
        "all-gather-done", "collective-permute-done", "send-done", "recv-done", "opt-barrier",
        "add-dependency"}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

_SHAPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s*->\s*.*\{\s*$")
_NAME = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*")


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction of a computation, as its HLO text line gives it."""

    name: str
    opcode: str
    shape: str  # the result type, e.g. "f32[128,400]{1,0}" or a tuple "(f32[2], s32[])"
    operands: tuple[str, ...]  # names of the operand instructions
    attributes: str  # the rest of the line: calls=, backend_config=, metadata=, ...


@dataclasses.dataclass(frozen=True)
class Row:
    """What one executed instruction costs.

    Attributes:
      name: the instruction's name in the HLO.
      opcode: fusion, convolution, copy-start, custom-call, all-reduce, ...
      kind: the fusion kind (kLoop, kOutput, ...), the custom call's target, or "".
      bytes: bytes of its operands and results (each counted once per execution).
      flops: 2 x multiply-adds of the matrix products and convolutions inside it.
      cycles: the TPU compiler's ``estimated_cycles`` for it, or None.
      count: executions per run of the program (while-loop trip counts).
      source: the JAX operation it was made from (its metadata's ``op_name``), shortened.
    """

    name: str
    opcode: str
    kind: str
    bytes: int
    flops: int
    cycles: int | None
    count: int
    source: str


def shape_bytes(shape: str) -> int:
    """Bytes of every array in an HLO type string ("f32[2,3]{1,0}" -> 24; tuples summed)."""
    total = 0.0
    for dtype, dims in _SHAPE.findall(shape):
        if dtype in DTYPE_BYTES:
            total += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return int(total)


def _dims(shape: str) -> list[int]:
    match = _SHAPE.search(shape)
    return [int(d) for d in match.group(2).split(",") if d] if match else []


def _matching(text: str, start: int, open_char: str, close_char: str) -> int:
    """Index just past the bracket that closes the one at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_char:
            depth += 1
        elif text[i] == close_char:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_char}{close_char} in HLO line: {text[:120]}")


def parse_instruction(line: str) -> Instruction | None:
    """The instruction of one HLO text line, or None for lines that hold none."""
    head = _NAME.match(line)
    if not head:
        return None
    rest = line[head.end():]
    if rest.startswith("("):  # a tuple type
        end = _matching(rest, 0, "(", ")")
    else:
        end = rest.index(" ")
    shape, rest = rest[:end], rest[end:].lstrip()
    paren = rest.index("(")
    opcode = rest[:paren].strip()
    close = _matching(rest, paren, "(", ")")
    operands = tuple(re.findall(r"%([\w.\-]+)", rest[paren:close]))
    return Instruction(head.group(1), opcode, shape, operands, rest[close:])


def parse_module(text: str) -> tuple[str, dict[str, list[Instruction]]]:
    """(name of the entry computation, every computation's instructions) of an HLO module text."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = None, None
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(2)
            computations[current] = []
            if header.group(1):
                entry = current
            continue
        if current is not None:
            instruction = parse_instruction(line)
            if instruction is not None:
                computations[current].append(instruction)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return entry, computations


def _attribute(attributes: str, key: str) -> str | None:
    match = re.search(rf"\b{key}=%?([\w.\-]+)", attributes)
    return match.group(1) if match else None


def _called(attributes: str, key: str) -> list[str]:
    match = re.search(rf"\b{key}=\{{([^}}]*)\}}", attributes)
    return re.findall(r"%?([\w.\-]+)", match.group(1)) if match else []


def _matmul_flops(instruction: Instruction, shapes: dict[str, str]) -> int:
    """2 x multiply-adds of a dot or convolution (0 for anything else)."""
    out = math.prod(_dims(instruction.shape))
    if instruction.opcode == "dot":
        lhs = _dims(shapes.get(instruction.operands[0], ""))
        contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", instruction.attributes)
        size = math.prod(lhs[int(i)] for i in contracting.group(1).split(",") if i) if contracting else 1
        return 2 * out * size
    if instruction.opcode == "convolution":
        return 2 * _convolution_macs(instruction, shapes)
    return 0


def _window_pairs(size: int, window: int, out: int, stride: int, pad_low: int, lhs_dilation: int,
                  rhs_dilation: int) -> int:
    """(output position, window position) pairs of one spatial axis that read a real input
    element, not padding or a hole of the input's dilation."""
    pairs = 0
    for o in range(out):
        for w in range(window):
            i = o * stride + w * rhs_dilation - pad_low
            if 0 <= i <= (size - 1) * lhs_dilation and i % lhs_dilation == 0:
                pairs += 1
    return pairs


def _convolution_macs(instruction: Instruction, shapes: dict[str, str]) -> int:
    """Multiply-adds of a convolution: every output element takes one per input feature of its
    group and per window position that lands on a real input element (XLA writes some matrix
    products as convolutions over a padded window; the padding is not work)."""
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", instruction.attributes)
    lhs = _dims(shapes.get(instruction.operands[0], ""))
    kernel = _dims(shapes.get(instruction.operands[1], ""))
    out = _dims(instruction.shape)
    if not labels or not lhs or not kernel or not out:
        return 0
    lhs_labels, kernel_labels, out_labels = labels.groups()
    macs = math.prod(out) * kernel[kernel_labels.index("i")]
    spatial = [c for c in kernel_labels if c.isdigit()]
    window = re.search(r"window=\{([^}]*)\}", instruction.attributes)
    fields = dict(f.split("=") for f in window.group(1).split()) if window else {}

    def per_axis(name: str, default: int) -> list[int]:
        if name not in fields:
            return [default] * len(spatial)
        return [int(v) for v in fields[name].split("x")]

    strides = per_axis("stride", 1)
    lhs_dilations, rhs_dilations = per_axis("lhs_dilate", 1), per_axis("rhs_dilate", 1)
    pads = ([int(p.split("_")[0]) for p in fields["pad"].split("x")] if "pad" in fields
            else [0] * len(spatial))
    for axis, label in enumerate(spatial):
        n = lhs[lhs_labels.index(label)]
        k, o = kernel[kernel_labels.index(label)], out[out_labels.index(label)]
        pairs = _window_pairs(n, k, o, strides[axis], pads[axis], lhs_dilations[axis], rhs_dilations[axis])
        macs = macs * pairs // max(o, 1)
    return macs


def _flops_inside(name: str, computations: dict[str, list[Instruction]]) -> int:
    """Matmul FLOPs of a fused computation, descending into the computations it calls."""
    instructions = computations.get(name, [])
    shapes = {i.name: i.shape for i in instructions}
    total = 0
    for instruction in instructions:
        total += _matmul_flops(instruction, shapes)
        for key in ("calls", "to_apply"):
            inner = _attribute(instruction.attributes, key)
            if inner and instruction.opcode == "fusion":
                total += _flops_inside(inner, computations)
    return total


def _source(attributes: str) -> str:
    match = re.search(r'op_name="([^"]*)"', attributes)
    if not match:
        return ""
    parts = [p for p in match.group(1).split("/") if p and not p.startswith(("jit(", "while", "body",
                                                                               "closed_call"))]
    return "/".join(parts[-3:])


def _kind(instruction: Instruction) -> str:
    if instruction.opcode == "fusion":
        return _attribute(instruction.attributes, "kind") or ""
    if instruction.opcode == "custom-call":
        match = re.search(r'custom_call_target="([^"]*)"', instruction.attributes)
        return match.group(1) if match else ""
    return ""


def _cycles(attributes: str) -> int | None:
    match = re.search(r'"estimated_cycles":"(-?\d+)"', attributes)
    return int(match.group(1)) if match else None


def _trip_count(attributes: str) -> int:
    match = re.search(r'"known_trip_count":\{"n":"(\d+)"', attributes)
    return int(match.group(1)) if match else 1


def rows(text: str) -> list[Row]:
    """The executed instructions of a compiled HLO module text, one :class:`Row` each."""
    entry, computations = parse_module(text)
    return list(_rows_of(entry, computations, 1))


def _rows_of(name: str, computations: dict[str, list[Instruction]], count: int) -> Iterable[Row]:
    instructions = computations[name]
    shapes = {i.name: i.shape for i in instructions}
    for instruction in instructions:
        attrs = instruction.attributes
        if instruction.opcode == "while":
            body = _attribute(attrs, "body")
            yield from _rows_of(body, computations, count * _trip_count(attrs))
            continue
        if instruction.opcode == "conditional":
            branches = (_called(attrs, "branch_computations")
                        or [b for b in (_attribute(attrs, "true_computation"),
                                        _attribute(attrs, "false_computation")) if b])
            costed = [list(_rows_of(b, computations, count)) for b in branches]
            yield from max(costed, key=lambda rs: sum(r.bytes for r in rs), default=[])
            continue
        if instruction.opcode in FREE:
            continue
        moved = shape_bytes(instruction.shape)
        if instruction.opcode.endswith("-start"):  # (operand, result, context): count the result once
            moved = shape_bytes(shapes.get(instruction.operands[0], "")) if instruction.operands else 0
            moved *= 2  # read and written
        else:
            moved += sum(shape_bytes(shapes.get(o, "")) for o in instruction.operands)
        flops = _matmul_flops(instruction, shapes)
        if instruction.opcode == "fusion":
            flops += _flops_inside(_attribute(attrs, "calls") or "", computations)
        yield Row(instruction.name, instruction.opcode, _kind(instruction), moved, flops,
                  _cycles(attrs), count, _source(attrs))


def unknown_cost_calls(text: str) -> list[str]:
    """Names of the entry computation's custom calls the TPU cost model prices at -1 s.

    The TPU compiler's memory-space assignment splits large prefetches into slices joined by a
    ``ConcatBitcast`` custom call; ``cost_analysis()["optimal_seconds"]`` counts each such call
    as -1 s (a sentinel for "no estimate"), which is why a whole step can come out negative
    while each of its pieces compiled alone comes out positive.
    """
    entry, computations = parse_module(text)
    return [i.name for i in computations[entry]
            if i.opcode == "custom-call" and _kind(i) == "ConcatBitcast"]


def totals(table: list[Row]) -> dict:
    """Bytes, FLOPs and cycles summed over a table's executions."""
    cycles = [r.cycles * r.count for r in table if r.cycles is not None]
    return {"bytes": sum(r.bytes * r.count for r in table),
            "flops": sum(r.flops * r.count for r in table),
            "cycles": sum(cycles) if cycles else None,
            "instructions": len(table)}


def largest(table: list[Row], k: int = 15, *, by: str = "bytes") -> list[Row]:
    """The ``k`` rows that cost the most ``by`` ("bytes", "flops" or "cycles"), per execution
    times count."""
    return sorted(table, key=lambda r: -(getattr(r, by) or 0) * r.count)[:k]


def format_table(table: list[Row], k: int = 15, *, by: str = "bytes") -> str:
    """The ``k`` costliest rows as a text table, with each one's share of the whole."""
    whole = totals(table)
    lines = [f"{'instruction':34} {'kind':16} {'MB':>9} {'share':>6} {'MFLOP':>9} {'cycles':>9} "
             f"{'runs':>4}  source"]
    for r in largest(table, k, by=by):
        share = r.bytes * r.count / whole["bytes"] if whole["bytes"] else 0.0
        cycles = "" if r.cycles is None else f"{r.cycles:,}"
        kind = r.kind or r.opcode
        lines.append(f"{r.name[:34]:34} {kind[:16]:16} {r.bytes * r.count / 1e6:9.2f} {share:6.1%} "
                     f"{r.flops * r.count / 1e6:9.1f} {cycles:>9} {r.count:4}  {r.source[:60]}")
    lines.append(f"{'all ' + str(whole['instructions']) + ' instructions':51} "
                 f"{whole['bytes'] / 1e6:9.2f} {1:6.0%} {whole['flops'] / 1e6:9.1f} "
                 f"{'' if whole['cycles'] is None else format(whole['cycles'], ','):>9}")
    return "\n".join(lines)
