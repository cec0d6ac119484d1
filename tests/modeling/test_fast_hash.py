"""FastHash (reference) against an independent slow implementation and hand-checked cases."""

import itertools

import numpy as np
import pytest
import torch

from yoso_deploy.modeling import ops


def hadamard(d: int) -> np.ndarray:
    """Sylvester's Hadamard matrix, built by Kronecker products (no butterflies involved)."""
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    return h


def slow_fast_hash(x, mask, signs, num_hash, tau):
    """Loops and explicit matrices in float64; exact for the small dyadic inputs used below."""
    b_, h_, s_, d = x.shape
    hm = hadamard(d)
    per_part = d // tau
    out = np.zeros((b_, h_, s_, num_hash), dtype=np.int64)
    for b, h, s in itertools.product(range(b_), range(h_), range(s_)):
        if mask[b, s] == 0:
            continue
        for f in range(num_hash):
            p, j = divmod(f, per_part)
            y = hm @ (signs[h, 0, p] * x[b, h, s])
            y = hm @ (signs[h, 1, p] * y)
            y = hm @ (signs[h, 2, p] * y)
            out[b, h, s, f] = sum(1 << i for i in range(tau) if y[j * tau + i] > 0)
    return out


def dyadic(shape, seed):
    # Multiples of 1/4 in [-2, 2]: every partial sum of three Hadamard stages is exact in fp32.
    g = np.random.default_rng(seed)
    return g.integers(-8, 9, size=shape).astype(np.float64) / 4


@pytest.mark.parametrize(
    "d,tau,m,s",
    [
        (8, 3, 2, 1),  # tau does not divide D (per_part=2), m == per_part, S=1
        (8, 3, 1, 13),  # m < per_part
        (8, 3, 5, 13),  # m > per_part: three parts
        (16, 4, 4, 7),  # tau divides D
        (16, 5, 7, 13),  # tau does not divide D, m > per_part
        (32, 9, 3, 5),  # yoso-like tau, m == per_part
        (64, 9, 10, 3),  # m > per_part (7)
        (4, 4, 3, 2),  # tau == D: one code per part
        (1, 1, 2, 3),  # smallest D
    ],
)
def test_fast_hash_matches_slow(d, tau, m, s):
    b, h = 2, 2
    x = dyadic((b, h, s, d), seed=d * 100 + s)
    mask = np.ones((b, s), dtype=np.int32)
    if s > 1:
        mask[1, -1] = 0  # a padded token gets code 0
    gen = torch.Generator().manual_seed(d + tau + m)
    signs = ops.draw_signs(h, m, tau, d, generator=gen)
    got = ops.fast_hash(torch.tensor(x, dtype=torch.float32), torch.tensor(mask), signs, m, tau)
    want = slow_fast_hash(x, mask, signs.numpy().astype(np.float64), m, tau)
    assert got.dtype == torch.int32
    assert got.shape == (b, h, s, m)
    np.testing.assert_array_equal(got.numpy(), want)
    assert int(got.max()) < 2**tau and int(got.min()) >= 0
    if s > 1:
        assert (got[1, :, -1] == 0).all()


def test_fast_hash_by_hand():
    # D=2, tau=1, m=2: per_part=2, P=1. x=(1, 2), all signs +1:
    # H(x) = (3, -1); H again = (2, 4); H again = (6, -2) -> bits (1, 0) -> codes (1, 0).
    x = torch.tensor([[[[1.0, 2.0]]]])
    signs = torch.ones(1, 3, 1, 2)
    codes = ops.fast_hash(x, torch.ones(1, 1, dtype=torch.int32), signs, num_hash=2, hash_code_len=1)
    assert codes.tolist() == [[[[1, 0]]]]
    # Flip the last diagonal's second sign: (2, -4) -> H = (-2, 6) -> codes (0, 1).
    signs[0, 2, 0, 1] = -1
    codes = ops.fast_hash(x, torch.ones(1, 1, dtype=torch.int32), signs, num_hash=2, hash_code_len=1)
    assert codes.tolist() == [[[[0, 1]]]]
    # D=2, tau=2, m=1: the code packs bit i of y[i]: y=(6,-2) -> 1.
    codes = ops.fast_hash(x, torch.ones(1, 1, dtype=torch.int32), torch.ones(1, 3, 1, 2), 1, 2)
    assert codes.tolist() == [[[[1]]]]


def test_fwht_stage_order_is_the_contract():
    # fwht must equal the contract's stride-D/2-first butterfly loop bit for bit on random fp32 data
    # (another stage order gives mathematically equal but differently rounded results).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, generator=g)
    want = x.clone()
    d = 64
    s = d // 2
    while s >= 1:
        for i in range(d):
            if i % (2 * s) < s:
                a, b = want[:, i].clone(), want[:, i + s].clone()
                want[:, i], want[:, i + s] = a + b, a - b
        s //= 2
    assert torch.equal(ops.fwht(x), want)


def test_fast_hash_rejects_bad_params():
    x = torch.zeros(1, 1, 2, 12)
    with pytest.raises(ValueError, match="power of two"):
        ops.fast_hash(x, torch.ones(1, 2, dtype=torch.int32), torch.ones(1, 3, 1, 12), 1, 3)
    x = torch.zeros(1, 1, 2, 4)
    with pytest.raises(ValueError, match="must not exceed"):
        ops.fast_hash(x, torch.ones(1, 2, dtype=torch.int32), torch.ones(1, 3, 1, 4), 1, 5)
    with pytest.raises(ValueError, match="signs must have shape"):
        ops.fast_hash(x, torch.ones(1, 2, dtype=torch.int32), torch.ones(1, 3, 2, 4), 1, 2)


def test_lsh_cumulation_by_hand():
    # One head, m=2, tau=1. keys: k0 codes (0,1), k1 codes (1,1) (masked: k2).
    qc = torch.tensor([[[[0, 1], [1, 0]]]], dtype=torch.int32)
    kc = torch.tensor([[[[0, 1], [1, 1], [0, 0]]]], dtype=torch.int32)
    v = torch.tensor([[[[1.0, 0.0], [0.0, 10.0], [100.0, 100.0]]]])
    qm = torch.tensor([[1, 1]], dtype=torch.int32)
    km = torch.tensor([[1, 1, 0]], dtype=torch.int32)
    out = ops.lsh_cumulation(qc, kc, qm, km, v, 1)
    # q0: f0 bucket 0 -> k0; f1 bucket 1 -> k0 + k1  => (v0 + v0 + v1)/2 = (1, 5)
    # q1: f0 bucket 1 -> k1;  f1 bucket 0 -> none    => v1/2 = (0, 5)
    assert out.tolist() == [[[[1.0, 5.0], [0.0, 5.0]]]]
    out = ops.lsh_cumulation(qc, kc, torch.tensor([[0, 1]], dtype=torch.int32), km, v, 1)
    assert out[0, 0, 0].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="outside"):
        ops.lsh_cumulation(qc + 1, kc, qm, km, v, 1)
