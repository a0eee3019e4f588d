"""The per-instruction reading of compiled HLO (vscjax.hlo_costs): bytes, matmul FLOPs, loop trip
counts and conditional branches against values worked out by hand, and against a real CPU
executable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vscjax import hlo_costs

# A hand-written optimized module: a fused dot in a while loop of 3 iterations, a conditional
# whose costlier branch must count, a custom call the TPU cost model cannot price, and free
# instructions (parameter, constant, get-tuple-element, bitcast, tuple).
MODULE = """\
HloModule example

%fused_dot (p0: f32[8,4], p1: f32[4,2]) -> f32[8,2] {
  %p0 = f32[8,4]{1,0} parameter(0)
  %p1 = f32[4,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (state: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %state = (s32[], f32[8,4]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %x = f32[8,4]{1,0} get-tuple-element(%state), index=1
  %w = f32[4,2]{1,0} constant({...})
  %f = f32[8,2]{1,0} fusion(%x, %w), kind=kOutput, calls=%fused_dot, backend_config={"window_config":{"estimated_cycles":"50"}}
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%i, %x)
}

%cond (state: (s32[], f32[8,4])) -> pred[] {
  %state = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

%cheap (a: f32[16]) -> f32[16] {
  %a = f32[16]{0} parameter(0)
  ROOT %n = f32[16]{0} negate(%a)
}

%dear (a: f32[16]) -> f32[16] {
  %a = f32[16]{0} parameter(0)
  %e = f32[16]{0} exponential(%a)
  ROOT %m = f32[16]{0} multiply(%e, %a)
}

ENTRY %main (x: f32[8,4], v: f32[16], k: pred[]) -> f32[16] {
  %x = f32[8,4]{1,0} parameter(0)
  %v = f32[16]{0} parameter(1)
  %k = pred[] parameter(2)
  %zero = s32[] constant(0)
  %init = (s32[], f32[8,4]{1,0}) tuple(%zero, %x)
  %loop = (s32[], f32[8,4]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %b = f32[2,8]{1,0} bitcast(%x)
  %joined = f32[8,4]{1,0} custom-call(%x), custom_call_target="ConcatBitcast"
  ROOT %r = f32[16]{0} conditional(%k, %v, %v), true_computation=%cheap, false_computation=%dear
}
"""


def test_shape_bytes_of_arrays_and_tuples():
    assert hlo_costs.shape_bytes("f32[2,3]{1,0}") == 24
    assert hlo_costs.shape_bytes("bf16[4]{0:T(128)S(1)}") == 8
    assert hlo_costs.shape_bytes("(u8[10]{0}, s32[], pred[3])") == 10 + 4 + 3
    assert hlo_costs.shape_bytes("f32[]") == 4


def test_rows_count_loops_branches_and_skip_free_instructions():
    rows = {r.name: r for r in hlo_costs.rows(MODULE)}
    # The fused dot runs 3 times; it reads x (128 B) and w (32 B) and writes 64 B.
    assert rows["f"].count == 3
    assert rows["f"].bytes == 128 + 32 + 64
    assert rows["f"].flops == 2 * 8 * 2 * 4
    assert rows["f"].cycles == 50
    # Of the conditional's branches the costlier counts: exponential and multiply (2 + 3 arrays).
    assert {"e", "m"} <= rows.keys() and "n" not in rows
    assert rows["m"].bytes == 3 * 64
    # Values that move nothing are not rows.
    assert not {"x", "v", "k", "zero", "init", "b", "i", "state", "t"} & rows.keys()
    totals = hlo_costs.totals(list(rows.values()))
    assert totals["flops"] == 3 * 2 * 8 * 2 * 4
    assert totals["cycles"] == 3 * 50


def test_unknown_cost_calls_are_the_entry_concat_bitcasts():
    assert hlo_costs.unknown_cost_calls(MODULE) == ["joined"]


def test_rows_of_a_cpu_executable_match_the_shapes():
    """A matmul compiled for this machine: its FLOPs are 2 M N K, and the bytes it reads and
    writes at least both operands and the result."""
    m, k, n = 64, 32, 16
    compiled = jax.jit(lambda a, b: a @ b).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
    table = hlo_costs.rows(compiled.as_text())
    totals = hlo_costs.totals(table)
    assert totals["flops"] == 2 * m * n * k
    assert totals["bytes"] >= 4 * (m * k + k * n + m * n)
    assert "MFLOP" in hlo_costs.format_table(table, 5)


@pytest.mark.parametrize("line", ["", "  // a comment", "}"])
def test_lines_without_instructions_are_skipped(line):
    assert hlo_costs.parse_instruction(line) is None


def test_convolution_flops_count_the_window_positions_on_real_input():
    shapes = {"in": "f32[1,8,8,3]{3,2,1,0}", "k": "f32[3,3,3,5]{3,2,1,0}"}
    conv = hlo_costs.parse_instruction(
        "  %c = f32[1,8,8,5]{3,2,1,0} convolution(%in, %k), window={size=3x3 pad=1_1x1_1}, "
        "dim_labels=b01f_01io->b01f")
    # Along each axis the 8 outputs see 3 input elements, but the 2 at the edges see 2 (one
    # window position is padding): 22 pairs per axis; 3 input features, 5 output features.
    assert hlo_costs._matmul_flops(conv, shapes) == 2 * 5 * 3 * 22 * 22
    np.testing.assert_equal(hlo_costs.shape_bytes(conv.shape), 8 * 8 * 5 * 4)


def test_a_matrix_product_written_as_a_padded_convolution_counts_its_products_once():
    """The TPU compiler writes [B, in] x [in, 3, L] as a convolution whose window (3) slides
    over a padded input axis of size 1: each output element is one dot product of length in."""
    shapes = {"x": "bf16[256,400,1]{0,1,2}", "w": "bf16[400,3,2048]{2,0,1}"}
    conv = hlo_costs.parse_instruction(
        "  %c = bf16[256,3,2048]{2,0,1} convolution(%x, %w), window={size=3 pad=2_2 rhs_reversal=1}, "
        "dim_labels=bf0_i0o->b0f")
    assert hlo_costs._matmul_flops(conv, shapes) == 2 * 256 * 3 * 2048 * 400
