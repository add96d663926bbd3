"""Products and layers of every registered algebra written without its structure tensor.

These are the independent computations the tests compare against: Python/numpy
complex numbers, numpy matmul on reshaped matrices, a hand-written Hamilton
product, np.cross. All in float64 numpy, broadcasting over leading axes.
"""

import numpy as np


def _complex(a):
  return a[..., 0] + 1j * a[..., 1]


def _from_complex(z):
  return np.stack([z.real, z.imag], axis=-1)


def prod_r(a, b):
  return a * b


def prod_c(a, b):
  return _from_complex(_complex(a) * _complex(b))


def prod_h(a, b):
  # Hamilton's product written out, (a0 + a1 i + a2 j + a3 k)(b0 + b1 i + b2 j + b3 k).
  a0, a1, a2, a3 = np.moveaxis(a, -1, 0)
  b0, b1, b2, b3 = np.moveaxis(b, -1, 0)
  return np.stack([
      a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3,
      a0 * b1 + a1 * b0 + a2 * b3 - a3 * b2,
      a0 * b2 - a1 * b3 + a2 * b0 + a3 * b1,
      a0 * b3 + a1 * b2 - a2 * b1 + a3 * b0,
  ], axis=-1)


def _prod_mat(n):
  def prod(a, b):
    shape = np.broadcast_shapes(a.shape, b.shape)
    ma = np.broadcast_to(a, shape).reshape(shape[:-1] + (n, n))  # row-major entries
    mb = np.broadcast_to(b, shape).reshape(shape[:-1] + (n, n))
    return (ma @ mb).reshape(shape)
  return prod


def prod_m2c(a, b):
  shape = np.broadcast_shapes(a.shape, b.shape)
  ma = _complex(np.broadcast_to(a, shape).reshape(shape[:-1] + (2, 2, 2)))
  mb = _complex(np.broadcast_to(b, shape).reshape(shape[:-1] + (2, 2, 2)))
  return _from_complex(ma @ mb).reshape(shape)


def prod_dual(a, b):
  return np.stack([a[..., 0] * b[..., 0], a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]], -1)


def prod_cross3(a, b):
  a, b = np.broadcast_arrays(a, b)
  return np.cross(a, b)


PRODUCTS = {
    "r": prod_r, "c": prod_c, "h": prod_h, "m2r": _prod_mat(2), "m3r": _prod_mat(3),
    "m4r": _prod_mat(4), "m2c": prod_m2c, "dual": prod_dual, "cross3": prod_cross3,
}


def dense(x, w, name):
  """y[..., o] = Σ_i w[i, o] · x[..., i], float64."""
  prod = PRODUCTS[name]
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  terms = prod(w, x[..., :, None, :])  # [..., Cin, Cout, D]
  return terms.sum(axis=-3)


def _same_pad(size, k, stride, dil):
  out = -(-size // stride)
  total = max((out - 1) * stride + (k - 1) * dil + 1 - size, 0)
  return total // 2, total - total // 2


def conv2d(x, w, name, stride=(1, 1), padding="SAME", dilation=(1, 1), groups=1):
  """Direct NHWC convolution by loops over output pixels and taps, float64."""
  prod = PRODUCTS[name]
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  n, h, wd, cin, d = x.shape
  kh, kw, cg, cout, _ = w.shape
  if padding == "SAME":
    pads = (_same_pad(h, kh, stride[0], dilation[0]), _same_pad(wd, kw, stride[1], dilation[1]))
  elif padding == "VALID":
    pads = ((0, 0), (0, 0))
  else:
    pads = padding
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0), (0, 0)))
  ho = (xp.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
  wo = (xp.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
  og = cout // groups
  y = np.zeros((n, ho, wo, cout, d))
  for p in range(ho):
    for q in range(wo):
      for a in range(kh):
        for b in range(kw):
          i, j = p * stride[0] + a * dilation[0], q * stride[1] + b * dilation[1]
          pix = xp[:, i, j]                                        # [N, Cin, D]
          for g in range(groups):
            xs = pix[:, g * cg:(g + 1) * cg]                       # [N, Cg, D]
            ws = w[a, b, :, g * og:(g + 1) * og]                   # [Cg, Og, D]
            y[:, p, q, g * og:(g + 1) * og] += prod(ws, xs[:, :, None, :]).sum(axis=1)
  return y
