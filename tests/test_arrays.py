"""engine.arrays: the shared small helpers, each against a plain numpy reference."""
import numpy as np
import pytest

from engine.arrays import compact, triangle_cross, unique_rows, unit_rows


@pytest.mark.parametrize("shape, low, high, dtype", [((5000, 2), 0, 300, np.int64), ((800, 3), -4, 4, np.int64),
                                                      ((200, 3), 0, 2**40, np.int64), ((60, 2), 0, 9, np.int32),
                                                      ((0, 2), 0, 1, np.int64)])
@pytest.mark.parametrize("flags", [{}, {"return_index": True}, {"return_inverse": True, "return_counts": True},
                                   {"return_index": True, "return_inverse": True, "return_counts": True}])
def test_unique_rows_gives_what_np_unique_axis0_gives(shape, low, high, dtype, flags):
    a = np.random.default_rng(0).integers(low, high, shape).astype(dtype)  # 2**40 ranges take the fallback
    got, want = unique_rows(a, **flags), np.unique(a, axis=0, **flags)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g.reshape(-1), w.reshape(-1))


def test_unit_rows_and_compact():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(unit_rows(x), [[0.6, 0.8], [0.0, 0.0]])
    v, f, old_to_new = compact(np.arange(12.0).reshape(4, 3), np.array([[3, 1, 3]]))
    assert v.tolist() == [[3.0, 4.0, 5.0], [9.0, 10.0, 11.0]] and f.tolist() == [[1, 0, 1]]
    assert old_to_new.tolist() == [-1, 0, -1, 1]


def test_triangle_cross_is_numpys_cross_of_the_edges():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(50, 3))
    f = rng.integers(0, 50, size=(200, 3))
    p = v[f]
    assert np.array_equal(triangle_cross(v, f), np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]))
    assert triangle_cross(v, f[:0]).shape == (0, 3)
