"""Tests for algebranets.costs: formulas against hand counts, model accounting
against Haiku's own parameter trees, and MAC counts against XLA's cost analysis;
and its command line (algebranets.cost_report) on layers and registered models.
"""

import contextlib
import io
import json
import math

import haiku as hk
import jax
import jax.numpy as jnp
import pytest

from algebranets import algebras
from algebranets import cost_report
from algebranets import costs
from algebranets import models
from algebranets import nn as ann
from algebranets import ops
from algebranets.models import transformer_xl as txl

# Real multiplies per product, typed in from the table in PAPER.md (not read
# from the Algebra objects, so a wrong structure tensor would show up here).
NAIVE = {"r": 1, "c": 4, "h": 16, "m2r": 8, "m3r": 27, "m4r": 64, "m2c": 32,
         "dual": 3, "cross3": 6}
FAST = {"c": 3, "m2c": 24}  # Gauss's trick, and M2(C) = 8 Gauss products.
DIM = {"r": 1, "c": 2, "h": 4, "m2r": 4, "m3r": 9, "m4r": 16, "m2c": 8, "dual": 2,
       "cross3": 3}

S = jax.ShapeDtypeStruct
F32 = jnp.float32


# ------------------------------------------------------------------ formulas
def test_table_covers_every_registered_algebra():
  assert set(algebras.names()) == set(NAIVE)


@pytest.mark.parametrize("name", sorted(NAIVE))
def test_dense_macs_per_algebra(name):
  # 10 positions · 3 inputs · 5 outputs = 150 products.
  assert costs.dense_macs(10, 3, 5, name) == 150 * NAIVE[name]
  assert costs.dense_macs(10, 3, 5, name, fast=True) == 150 * FAST.get(name, NAIVE[name])
  assert costs.dense_params(3, 5, name) == (15 + 5) * DIM[name]
  assert costs.dense_params(3, 5, name, with_bias=False) == 15 * DIM[name]


def test_dense_macs_hand_numbers():
  assert costs.dense_macs(32, 64, 128, "r") == 262_144
  assert costs.dense_macs(32, 64, 128, "c") == 1_048_576
  assert costs.dense_macs(32, 64, 128, "h") == 4_194_304
  assert costs.dense_macs(32, 64, 128, "m2r") == 2_097_152
  assert costs.dense_macs(32, 64, 128, algebras.get("m2r")) == 2_097_152  # an Algebra too


def test_conv_macs_hand_numbers():
  # 3x3, stride 2, VALID on 2x9x9: 4x4 outputs -> 32 positions; 6 -> 8 channels.
  assert costs.conv_macs(32, (3, 3), 6, 8, 1, "r") == 13_824       # 32·9·6·8
  assert costs.conv_macs(32, 3, 6, 8, 1, "c") == 55_296            # ·4
  # groups=2: each output sees 3 of the 6 inputs.
  assert costs.conv_macs(32, (3, 3), 6, 8, 2, "r") == 6_912
  assert costs.conv_macs(32, (3, 3), 6, 8, 2, "h") == 110_592      # ·16
  # Depthwise 3x3 on an 8x8 SAME output, 8 channels: 64·9·1·8.
  assert costs.conv_macs(64, 3, 8, 8, 8, "r") == 4_608
  assert costs.conv_macs(64, 3, 8, 8, 8, "m2r") == 36_864          # ·8
  assert costs.conv_macs(64, 3, 8, 8, 8, "m3r") == 124_416         # ·27
  # Non-square kernel (1x7) and ResNet-50's stem (7x7/2, 3 -> 64, 112x112 out).
  assert costs.conv_macs(10, (1, 7), 4, 4, 1, "dual") == 10 * 7 * 16 * 3
  assert costs.conv_macs(112 * 112, 7, 3, 64, 1, "r") == 118_013_952
  # Params: (taps·c_in/groups·c_out + c_out)·D.
  assert costs.conv_params((3, 3), 6, 8, 2, "c") == (9 * 3 * 8 + 8) * 2
  assert costs.conv_params(3, 8, 8, 8, "m2r", with_bias=False) == 9 * 8 * 4
  assert costs.embed_params(100, 7, "h") == 2_800


@pytest.mark.parametrize("name", sorted(NAIVE))
def test_fast_variant(name):
  naive = costs.conv_macs(20, (3, 3), 4, 6, 2, name)
  fast = costs.conv_macs(20, (3, 3), 4, 6, 2, name, fast=True)
  if name in ("c", "m2c"):
    assert 4 * fast == 3 * naive  # Gauss saves a quarter of the multiplies.
  else:
    assert fast == naive


@pytest.mark.parametrize("call", [
    lambda: costs.dense_macs(0, 3, 5, "r"),
    lambda: costs.dense_macs(1, 3, 5, "quaternion"),
    lambda: costs.conv_macs(4, 3, 6, 8, 4, "r"),    # 4 does not divide 6
    lambda: costs.conv_macs(4, (3, 0), 6, 8, 1, "r"),
    lambda: costs.conv_params(3, 6, 8, 1.5, "r"),
])
def test_bad_arguments_raise(call):
  with pytest.raises(ValueError):
    call()


# ------------------------------------------------------------- model_costs
def _init_size(fn, *args):
  # Haiku's own parameter tree, built under eval_shape (shapes only) for speed.
  params = jax.eval_shape(hk.transform(fn).init, jax.random.PRNGKey(0), *args)
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("name", sorted(NAIVE))
def test_model_costs_two_layer_model(name):
  d, m = DIM[name], NAIVE[name]

  def fn(x):
    y = ann.Conv2D(4, 3, stride=2, padding="VALID", algebra=name, name="conv")(x)
    return ann.Linear(5, algebra=name, with_bias=False, name="dense")(y)

  x = jnp.zeros((2, 9, 9, 3, d))
  report = costs.model_costs(fn, x)
  conv, dense = report.layers
  assert (conv.name, conv.kind, conv.algebra) == ("conv", "conv", name)
  assert (conv.input_shape, conv.output_shape) == ((2, 9, 9, 3, d), (2, 4, 4, 4, d))
  assert conv.params == (9 * 3 * 4 + 4) * d          # w [3,3,3,4,D] + b [4,D]
  assert conv.macs == 2 * 4 * 4 * 9 * 3 * 4 * m        # 32 positions · 108 products
  assert (dense.name, dense.kind, dense.output_shape) == ("dense", "dense", (2, 4, 4, 5, d))
  assert dense.params == 4 * 5 * d
  assert dense.macs == 32 * 4 * 5 * m
  assert report.macs == (3456 + 640) * m
  assert report.fast_macs == (3456 + 640) * FAST.get(name, m)
  assert report.total_params == (112 + 20) * d == _init_size(fn, x)
  assert report.other_params == {} and report.params_consistent


def test_model_costs_lift_norm_project_and_embed():
  alg = "h"

  def fn(ids, feats):
    x = ann.Embed(11, 3, algebra=alg, name="embed")(ids)            # [2, 5, 3, 4]
    x = x + ann.Lift(3, algebra=alg, name="lift")(feats)            # hk.Linear 6 -> 12
    x = ann.LayerNorm(algebra=alg, name="norm")(x)
    x = ann.Linear(2, algebra=alg, name="dense")(x)                 # [2, 5, 2, 4]
    return ann.Project(7, algebra=alg, name="project")(x)           # hk.Linear 8 -> 7

  ids, feats = jnp.zeros((2, 5), jnp.int32), jnp.zeros((2, 5, 6))
  report = costs.model_costs(fn, ids, feats)
  by_name = {l.name: l for l in report.layers}
  assert list(by_name) == ["embed", "lift/linear", "dense", "project/linear"]
  assert by_name["embed"].params == 11 * 3 * 4 and by_name["embed"].macs == 0
  assert by_name["lift/linear"].algebra == "r"
  assert by_name["lift/linear"].params == 6 * 12 + 12
  assert by_name["lift/linear"].macs == 10 * 6 * 12
  assert by_name["dense"].params == (3 * 2 + 2) * 4
  assert by_name["dense"].macs == 10 * 3 * 2 * 16
  assert by_name["project/linear"].params == 8 * 7 + 7
  assert by_name["project/linear"].macs == 10 * 8 * 7
  assert report.macs == 720 + 960 + 560
  # The norm is not a weight layer: its params are "other" and in the total.
  assert set(report.other_params) == {"norm"} and report.other_params["norm"] > 0
  assert report.params_consistent
  assert report.total_params == _init_size(fn, ids, feats)


def test_model_costs_shared_layer_static_kwargs_and_state():

  def fn(x, is_training):
    layer = hk.Linear(6, name="shared")
    y = layer(layer(x))                                              # applied twice
    y = hk.BatchNorm(True, True, 0.9, name="bn")(y, is_training)
    return hk.Conv1D(2, 3, padding="VALID", with_bias=False, name="c1")(y)

  x = S((4, 7, 6), F32)                                              # abstract input
  report = costs.model_costs(fn, x, is_training=True)
  first, second, conv = report.layers
  assert (first.name, first.call, second.name, second.call) == ("shared", 0, "shared", 1)
  assert first.params == 6 * 6 + 6 and second.params == 0            # params once
  assert first.macs == second.macs == 28 * 36                        # MACs per call
  assert conv.params == 3 * 6 * 2 and conv.macs == 4 * 5 * 3 * 6 * 2
  assert report.macs == 2 * 28 * 36 + 4 * 5 * 36
  assert report.other_params == {"bn": 12}
  assert report.state_size > 0
  assert report.params_consistent
  init = hk.transform_with_state(lambda x: fn(x, True)).init
  params, _ = jax.eval_shape(init, jax.random.PRNGKey(0), x)
  assert report.total_params == sum(p.size for p in jax.tree_util.tree_leaves(params))


def test_model_costs_haiku_embed_and_depthwise():

  def fn(ids):
    x = hk.Embed(13, 4, name="tok")(ids)                             # [2, 6, 4]
    x = hk.DepthwiseConv1D(2, 3, padding="VALID", name="dw")(x)      # [2, 4, 8]
    return hk.Linear(4, with_bias=False, name="down")(x)             # [2, 4, 4]

  ids = S((2, 6), jnp.int32)
  report = costs.model_costs(fn, ids)
  assert [(l.name, l.kind) for l in report.layers] == [
      ("tok", "embed"), ("dw", "conv"), ("down", "dense")]
  tok, dw, down = report.layers
  assert (tok.params, tok.macs) == (13 * 4, 0)
  assert dw.params == 3 * 1 * 8 + 8 and dw.macs == 8 * 3 * 1 * 8   # 8 outputs, 1 input each
  assert down.macs == 8 * 8 * 4
  assert report.macs == 192 + 256
  assert report.params_consistent and report.total_params == _init_size(fn, ids)


def test_model_costs_nested_layer_counted_once():

  class MyLinear(hk.Linear):  # a recorded layer calling another recorded method

    def __call__(self, x):
      return super().__call__(x) * 2.0

  report = costs.model_costs(lambda x: MyLinear(3)(x), S((5, 4), F32))
  assert len(report.layers) == 1 and report.macs == 5 * 4 * 3


def test_model_costs_resnet50_matches_published_size():
  # PAPER.md: ResNet-50 v1.5 has 25,557,032 parameters and ~4.1 G MACs at 224.
  # Abstract evaluation makes this cheap (about a second).
  def fn(x):
    return hk.nets.ResNet50(1000)(x, is_training=True)

  report = costs.model_costs(fn, S((1, 224, 224, 3), F32))
  assert report.total_params == 25_557_032
  assert report.params_consistent
  assert 4.0e9 < report.macs < 4.2e9
  assert len([l for l in report.layers if l.kind == "conv"]) == 53


def test_format_table_and_cli():
  report = costs.model_costs(lambda x: hk.Linear(3, name="fc")(x), S((2, 4), F32))
  table = costs.format_table(report)
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
  assert ["fc", "dense", "r", "[2,4]", "[2,3]", "15", "24", "24"] in cells   # 4·3+3, 2·4·3
  assert ["total", "", "", "", "", "15", "24", "24"] in cells
  assert "state: 0 numbers." in table and ": ok;" in table
  assert table.rstrip().endswith("weight layers 24 + other contractions 0 = all 24 "
                                 "(flops = 2 × MACs).")

  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    cost_report.main(["--c_in=8", "--c_out=8", "--batch=2", "--spatial=3", "--json"])
  rows = {r["algebra"]: r for r in json.loads(out.getvalue())}
  # Every registered algebra, then examples of the families (Clifford, learned).
  assert set(rows) == set(NAIVE) | set(costs.FAMILY_EXAMPLES)
  assert rows["cl_1_1"]["fast_mults"] == 8 and rows["cl_1_1"]["mults"] == 16
  assert rows["learned:4"]["dense_params"] == (64 + 8) * 4 + 4 ** 3          # its own T
  assert rows["learned:4:network"]["dense_params"] == (64 + 8) * 4           # T counted once
  assert rows["m2r"]["dense_macs"] == 2 * 8 * 8 * 8
  assert rows["c"]["conv_fast_macs"] == 2 * 9 * 9 * 8 * 8 * 3
  assert rows["h"]["dense_params"] == (64 + 8) * 4

  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    cost_report.main(["--c_in=16", "--c_out=16", "--real_width", "--no-with_bias", "--json"])
  rows = {r["algebra"]: r for r in json.loads(out.getvalue())}
  # 16 real components = 4 elements of M2(R): 1/n² of the params, 1/n of the MACs
  # of the real layer of the same width (PAPER.md), n = 2.
  assert (rows["m2r"]["c_in"], rows["m2r"]["dense_params"]) == (4, 64)
  assert (rows["r"]["dense_params"], rows["r"]["dense_macs"]) == (256, 256)
  assert rows["m2r"]["dense_macs"] == 128
  assert rows["m3r"]["c_in"] == 1                                    # 16 // 9

  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    cost_report.main(["--c_in=8", "--c_out=8"])
  lines = out.getvalue().strip().splitlines()
  assert len(lines) == 2 + len(NAIVE) + len(costs.FAMILY_EXAMPLES)
  assert lines[0].startswith("| algebra")


# ------------------------------------------------------ XLA cross-check
def _xla_flops(f, *args):
  cost = jax.jit(f).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return cost["flops"]


def test_xla_real_dense_and_conv_flops_are_two_per_mac():
  # No bias: XLA counts a bias add as one flop per output element.
  flops = _xla_flops(lambda x, w: x @ w, S((8, 16), F32), S((16, 32), F32))
  assert flops == 2 * costs.dense_macs(8, 16, 32, "r")

  def conv(stride, padding, groups):
    return lambda x, w: jax.lax.conv_general_dilated(
        x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)

  x, w = S((2, 9, 9, 6), F32), S((3, 3, 3, 8), F32)
  assert _xla_flops(conv(2, "VALID", 2), x, w) == 2 * costs.conv_macs(32, 3, 6, 8, 2, "r")
  # SAME: XLA skips taps on the zero padding, we count them (module docstring).
  # Per axis of 9 the valid taps are 7·3 + 2·2 = 25, so 2·25²·3·8 MACs.
  assert _xla_flops(conv(1, "SAME", 2), x, w) == 2 * (2 * 25 * 25 * 3 * 8)
  assert costs.conv_macs(2 * 81, 3, 6, 8, 2, "r") == 2 * 81 * 9 * 3 * 8


def _per_position_flops(path, alg, cin=6, cout=5):
  # The weight-side work of a path (e.g. building the expanded D×D blocks)
  # does not grow with the batch; the difference between batch 7 and 3
  # isolates what is done per position.
  d = alg.dim
  f = lambda x, w: ops.dense(x, w, alg, path=path)
  small, big = (_xla_flops(f, S((b, cin, d), F32), S((cin, cout, d), F32)) for b in (3, 7))
  return (big - small) / 4


@pytest.mark.parametrize("name", ["c", "h", "m2r"])
def test_xla_expanded_path_does_d_squared_macs(name):
  d = DIM[name]
  assert _per_position_flops("expanded", algebras.get(name)) == 2 * 6 * 5 * d * d


@pytest.mark.parametrize("name,path", [("m2r", "folded"), ("m3r", "folded"),
                                       ("dual", "sparse"), ("cross3", "sparse")])
def test_xla_folded_and_sparse_paths_do_the_naive_count(name, path):
  alg = algebras.get(name)
  assert _per_position_flops(path, alg) == 2 * costs.dense_macs(1, 6, 5, alg)


def test_xla_folded_m2c_does_the_fast_count():
  # M2(C) folds into a complex layer on 2x the batch (Cin·2 -> Cout·2 complex
  # elements), which runs Gauss's product: 8 complex products of 3 real
  # multiplies per M2(C) product, plus Gauss's 2 adds per complex input and
  # output element of the folded layer: 2 columns × 2·(6·2 + 5·2) = 88.
  alg = algebras.get("m2c")
  assert ops.default_path("c", "dense") == "gauss"
  assert _per_position_flops("folded", alg) == 2 * costs.dense_macs(1, 6, 5, alg, fast=True) + 88


def test_xla_folded_m2r_dense_and_conv_exact():
  alg = algebras.get("m2r")
  # Folding only reshapes and transposes, so the whole program is the naive count.
  f = lambda x, w: ops.dense(x, w, alg, path="folded")
  assert _xla_flops(f, S((3, 6, 4), F32), S((6, 5, 4), F32)) == 2 * costs.dense_macs(3, 6, 5, alg)
  g = lambda x, w: ops.conv2d(x, w, alg, stride=2, padding="VALID", feature_group_count=2,
                              path="folded")
  x, w = S((2, 9, 8, 6, 4), F32), S((3, 2, 3, 4, 4), F32)
  assert jax.eval_shape(g, x, w).shape == (2, 4, 4, 4, 4)
  assert _xla_flops(g, x, w) == 2 * costs.conv_macs(2 * 4 * 4, (3, 2), 6, 4, 2, alg)


def test_xla_gauss_path_does_the_fast_count():
  # Per position Gauss does 3·c_in·c_out MACs plus 2 adds per input element
  # (x_i - x_r, x_r + x_i) and 2 per output element (k1 - k3, k1 + k2).
  per_position = _per_position_flops("gauss", algebras.COMPLEX)
  assert per_position == 2 * costs.dense_macs(1, 6, 5, "c", fast=True) + 2 * 6 + 2 * 5
  assert math.isclose(2 * costs.dense_macs(1, 6, 5, "c"), 4 / 3 * (per_position - 22))


def test_cli_model_table_counts_the_model(capsys):
  # The CLI's params for a registered model equal the model's parameter leaves.
  cost_report.main(["--model", "cifar_resnet20", "--algebras", "r,m2r", "--json"])
  out = json.loads(capsys.readouterr().out)
  for row in out["rows"]:
    f = hk.transform_with_state(lambda x, a=row["algebra"]: models.MODELS["cifar_resnet20"](
        num_classes=10, algebra=a, width=1.0)(x, is_training=True))
    params, _ = jax.eval_shape(f.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    assert row["params"] == sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  # Same width: M2(R) does 8/4 MACs per real parameter.
  assert out["rows"][1]["macs"] > out["rows"][0]["macs"]
  with pytest.raises(ValueError, match="Unknown model"):
    cost_report.main(["--model", "resnet7"])


# ------------------------------------------- contractions outside weight layers
def test_other_macs_count_activation_products_not_weight_layers():
  # An attention-like block: a recorded projection, then two products of activations.
  def fn(x):                                                         # [2, 5, 8]
    q = hk.Linear(8, with_bias=False, name="q")(x)                   # weight layer: 2·5·8·8
    scores = jnp.einsum("btc,bsc->bts", q, x)                        # 2·5·5·8 products
    return jnp.einsum("bts,bsc->btc", jax.nn.softmax(scores), x)     # 2·5·5·8 products

  report = costs.model_costs(fn, S((2, 5, 8), F32))
  assert report.macs == 2 * 5 * 8 * 8
  assert report.other_macs == 2 * (2 * 5 * 5 * 8)
  assert report.all_macs == 640 + 800 and report.all_fast_macs == report.all_macs
  assert report.to_dict()["all_macs"] == 1440
  table = costs.format_table(report)
  assert "(contractions outside weight layers)" in table and "| 1,440 |" in table


def test_other_macs_algebra_layer_internals_are_not_counted_twice():
  # The expanded path runs one real matmul of D² MACs per product, the reference path einsums
  # with the structure tensor: both inside the layer, so other_macs stays 0 whatever the path.
  for path in ("expanded", "reference"):
    fn = lambda x, p=path: ann.Linear(3, algebra="h", path=p, name="dense")(x)
    report = costs.model_costs(fn, S((4, 5, 4), F32))
    assert report.macs == 4 * 5 * 3 * 16 and report.other_macs == 0


def test_jaxpr_macs_cond_scan_and_conv():
  x, w = S((4, 6), F32), S((6, 3), F32)
  # cond: the cheapest branch (4·6·3 rather than 4·6·3 + 4·3·3).
  f = lambda x, w: jax.lax.cond(x.sum() > 0, lambda: (x @ w) @ jnp.eye(3), lambda: x @ w)
  assert costs.jaxpr_macs(jax.make_jaxpr(f)(x, w)) == 72
  # scan: the body times its length.
  g = lambda x, w: jax.lax.scan(lambda c, _: (c, c @ w), x, None, length=5)[1]
  assert costs.jaxpr_macs(jax.make_jaxpr(g)(x, w)) == 5 * 72
  # A convolution counts its padded taps: 2·9·9 outputs × 8 channels × 9 taps × 3 (groups 2).
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
  xc, kc = S((2, 9, 9, 6), F32), S((3, 3, 3, 8), F32)
  assert costs.jaxpr_macs(jax.make_jaxpr(conv)(xc, kc)) == costs.conv_macs(2 * 81, 3, 6, 8, 2, "r")
  # Without padding XLA agrees: 2 flops per MAC.
  valid = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
  assert 2 * costs.jaxpr_macs(jax.make_jaxpr(valid)(xc, kc)) == _xla_flops(valid, xc, kc)


def test_image_models_have_no_other_macs():
  # ResNet and MobileNet: every multiply-add is in a weight layer (pooling is a reduction).
  for name in ("resnet50", "mobilenet_v1"):
    report = costs.model_costs(lambda x, n=name: models.MODELS[n](num_classes=1000)(
        x, is_training=False), S((1, 224, 224, 3), F32))
    assert report.other_macs == 0 and report.all_macs == report.macs


# Transformer-XL, counted by hand from the architecture (not from the code): per layer and
# sequence, weight layers q (T), kv (K = M + T positions), r (K encodings, once per batch),
# o (T), ff_in and ff_out (T); outside them the two score terms and the attention-weighted
# values, T·K·H·Ch·D each; then the logits.
def _txl_hand_macs(b, t, m, c, h, ch, f, n_layers, mults, d):
  k = m + t
  weights = n_layers * mults * (b * t * c * h * ch + b * k * c * 2 * h * ch + k * c * h * ch
                                + b * t * h * ch * c + 2 * b * t * c * f)
  attention = n_layers * 3 * b * h * t * k * ch * d
  return weights, attention


@pytest.mark.parametrize("name", ["r", "c", "m2r"])
def test_transformer_xl_all_macs_hand_formula(name):
  b, t, m, c, h, ch, f, n_layers, v = 2, 8, 12, 16, 2, 8, 32, 2, 64
  config = dict(vocab_size=v, d_model=c, n_layers=n_layers, n_heads=h, d_head=ch, d_inner=f,
                mem_len=m)
  report = txl.model_costs(config, name, seq_len=t, batch_size=b)
  weights, attention = _txl_hand_macs(b, t, m, c, h, ch, f, n_layers, NAIVE[name], DIM[name])
  logits = b * t * v * c * DIM[name]                 # tied softmax: real dot over C·D per word
  assert report.macs == weights
  assert report.other_macs == attention + logits
  assert report.all_macs == weights + attention + logits


def test_transformer_xl_adaptive_softmax_counts_what_the_step_computes():
  b, t, m, c, h, ch, f, n_layers = 2, 8, 8, 16, 2, 8, 32, 1
  config = dict(vocab_size=64, d_model=c, n_layers=n_layers, n_heads=h, d_head=ch, d_inner=f,
                mem_len=m, cutoffs=(20, 40), tail_capacity=0.125)
  weights, attention = _txl_hand_macs(b, t, m, c, h, ch, f, n_layers, 1, 1)
  n = b * t                                          # 16 positions
  head = n * (20 + 2) * c                            # 20 head words + 2 cluster logits
  gathered = math.ceil(0.125 * n)                    # tail rows computed per cluster: 2
  tails = gathered * (20 + 24) * c                   # clusters [20, 40) and [40, 64)
  report = txl.model_costs(config, "r", seq_len=t, batch_size=b)
  assert (report.macs, report.other_macs) == (weights, attention + head + tails)
  # Without targets (evaluation's log-probabilities): every cluster for every position.
  report = txl.model_costs(config, "r", seq_len=t, batch_size=b, with_targets=False)
  assert report.other_macs == attention + n * (22 + 20 + 24) * c


def test_transformer_xl_all_macs_agree_with_xla_cost_analysis():
  # XLA counts 2 flops per multiply-add of every dot, plus one per element-wise op (bias adds,
  # norms, softmax, residuals): O(activations), about 1/C of the contractions. So XLA's flops
  # / 2 lie just above all_macs -- here 1.6% -- while the weight-layer MACs miss the attention
  # and logits (22% of the program at this size).
  b, t, c, v = 2, 64, 128, 256
  config = dict(vocab_size=v, d_model=c, n_layers=2, n_heads=4, d_head=32, d_inner=512,
                mem_len=t)
  report = txl.model_costs(config, "r", seq_len=t, batch_size=b)

  def fn(tokens, mems, targets):
    return txl.TransformerXL(**config, algebra="r")(tokens, mems, targets=targets)

  f = hk.transform(fn)
  tokens = jnp.zeros((b, t), jnp.int32)
  mems = [jnp.zeros((b, t, c, 1))] * 2
  params = jax.eval_shape(f.init, jax.random.PRNGKey(0), tokens, mems, tokens)
  xla_macs = _xla_flops(lambda p, x, m, y: f.apply(p, None, x, m, y), params, tokens, mems,
                        tokens) / 2
  assert 1.0 <= xla_macs / report.all_macs < 1.03
  assert xla_macs / report.macs > 1.2


def test_cli_reports_all_macs_of_the_enwik8_preset(capsys):
  # The published enwik8 base model (12 layers, d_model 512, 8 heads of 64, d_inner 2048,
  # 256 bytes, mem_len 512) on a 64-token segment, counted by hand.
  cost_report.main(["--model", "enwik8_base", "--algebras", "r", "--seq_len", "64", "--json"])
  [row] = json.loads(capsys.readouterr().out)["rows"]
  n_layers, t, k, c, hch, f, v = 12, 64, 64 + 512, 512, 512, 2048, 256
  weights = n_layers * (t * c * hch + k * c * 2 * hch + k * c * hch + t * hch * c + 2 * t * c * f)
  other = n_layers * 3 * t * k * hch + t * v * c
  assert (row["macs"], row["all_macs"]) == (weights, weights + other)
  assert row["params"] == 41_082_112
