"""Texture bake: exact through an identity map, follows a known layout change, pads islands, validates input."""
import numpy as np
import pytest

from engine.errors import Cancelled, InputError
from engine.progress import CancelToken, Progress
from engine.transfer import synthetic
from engine.transfer.texture import bake_texture, rasterize_uv, sample_bilinear


def square_mesh(n=4):
    v, f = synthetic.grid(n, n)
    uv = v[f][..., :2].copy()  # UV = (x, y) on the unit square
    return v, f, uv


def test_identity_bake_reproduces_the_texture():
    v, f, uv = square_mesh(4)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    face, bary = synthetic.identity_map(f, len(v))
    out = bake_texture(f, uv, img, f, uv, face, bary, size=(32, 32), padding=2)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, img)


def test_bake_follows_a_known_change_of_layout():
    """Target = same square, UVs rotated by 90 degrees: the baked image is the rotated source image."""
    v, f, uv = square_mesh(3)
    rng = np.random.default_rng(1)
    img = rng.random((24, 24, 2)).astype(np.float32)
    tuv = np.stack([1.0 - uv[..., 1], uv[..., 0]], axis=-1)  # (u, v) -> (1 - v, u)
    face, bary = synthetic.identity_map(f, len(v))
    out = bake_texture(f, uv, img, f, tuv, face, bary, size=(24, 24), padding=0)
    # output texel at (u', v') = (1 - v, u) shows the source at (u, v) = (v', 1 - u'):
    # in image terms (row 0 = top) a rotation of the array by 90 degrees
    np.testing.assert_allclose(out, np.rot90(img, k=1), atol=1e-5)


def test_rasterize_matches_a_per_texel_reference():
    rng = np.random.default_rng(2)
    uv = rng.random((6, 3, 2))
    face, bary = rasterize_uv(uv, (20, 17))
    H, W = 20, 17
    for y in range(H):
        for x in range(W):
            p = np.array([(x + 0.5) / W, 1 - (y + 0.5) / H])
            hits = []
            for t in range(len(uv)):
                a, b, c = uv[t]
                m = np.array([b - a, c - a]).T
                w1, w2 = np.linalg.solve(m, p - a)
                if min(1 - w1 - w2, w1, w2) > 1e-6:
                    hits.append((t, np.array([1 - w1 - w2, w1, w2])))
            if not hits:
                # texels on no triangle (border cases within 1e-6 are allowed either way)
                if face[y, x] >= 0:
                    assert bary[y, x].min() > -1e-5
                continue
            assert face[y, x] in [t for t, _ in hits]
            got = dict(hits)[face[y, x]]
            np.testing.assert_allclose(bary[y, x], got, atol=1e-5)


def test_padding_fills_around_islands_and_leaves_background_beyond():
    v, f, uv = square_mesh(2)
    tuv = 0.25 + 0.5 * uv  # the target island covers the middle half of its image
    img = np.full((16, 16, 3), 200, np.uint8)
    face, bary = synthetic.identity_map(f, len(v))
    out = bake_texture(f, uv, img, f, tuv, face, bary, size=(32, 32), padding=3, background=7)
    assert (out[8:24, 8:24] == 200).all()
    assert (out[5:27, 5:27] == 200).all()  # 3 texels of padding
    assert (out[:4] == 7).all() and (out[:, 28:] == 7).all()


def test_seam_straddling_target_samples_the_right_side():
    """A seamed cylinder texture (a function of the angle) baked onto a cylinder whose triangles cross the seam."""
    sv, sf, suv = synthetic.cylinder(16, 2)
    tv, tf, tuv = synthetic.cylinder(11, 2, angle_offset=0.3)
    from engine.geometry.closest import SurfaceQuery

    face, bary, _, _ = SurfaceQuery(sv, sf).closest(tv)
    W = 64
    u = (np.arange(W) + 0.5) / W
    img = np.repeat((np.cos(2 * np.pi * u) * 0.5 + 0.5)[None, :, None], 8, axis=0).astype(np.float32)
    out = bake_texture(sf, suv, img, tf, tuv, face, bary, size=(8, 64), padding=0, src_vertices=sv)
    # texel column j of the target shows angle 0.3 + 2 pi u_j
    expect = np.cos(0.3 + 2 * np.pi * u) * 0.5 + 0.5
    assert np.abs(out[:, :, 0] - expect[None, :]).max() < 0.05


def test_sample_bilinear_wraps_or_clamps():
    img = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    at_edge = np.array([[0.0, 0.5]])
    assert sample_bilinear(img, at_edge, "repeat")[0, 0] == pytest.approx(1.5)  # halfway between texel 3 and texel 0
    assert sample_bilinear(img, at_edge, "clamp")[0, 0] == pytest.approx(0.0)


def test_progress_is_reported_and_cancel_stops():
    v, f, uv = square_mesh(3)
    img = np.zeros((16, 16), np.uint8)
    face, bary = synthetic.identity_map(f, len(v))
    seen = []
    out = bake_texture(f, uv, img, f, uv, face, bary, size=16, progress=lambda s, x: seen.append((s, x)))
    assert out.shape == (16, 16)
    assert {s for s, _ in seen} >= {"uv", "raster", "sample", "dilate"}
    assert seen[-1][1] == pytest.approx(1.0)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        bake_texture(f, uv, img, f, uv, face, bary, size=16, progress=Progress(None, token))


def test_bad_inputs():
    v, f, uv = square_mesh(2)
    face, bary = synthetic.identity_map(f, len(v))
    img = np.zeros((8, 8, 3), np.uint8)
    for kw in [dict(src_image=None), dict(src_image=np.zeros((8, 8, 7))), dict(tgt_corner_uv=None),
               dict(src_corner_uv=uv[:, :2]), dict(size=(0, 8)), dict(padding=-1), dict(wrap="mirror")]:
        args = dict(src_faces=f, src_corner_uv=uv, src_image=img, tgt_faces=f, tgt_corner_uv=uv,
                    tgt_to_src_face=face, tgt_to_src_bary=bary, size=8)
        args.update(kw)
        with pytest.raises(InputError):
            bake_texture(**args)


def test_refinement_follows_the_source_layout_inside_large_target_triangles():
    """A coarse target over a fine source whose UVs are not affine (u = x^2): without refinement the
    texels of a large target triangle get linearly interpolated source UVs; with it they follow."""
    sv, sf = synthetic.grid(16, 16)
    suv = np.stack([sv[..., 0] ** 2, sv[..., 1]], -1)[sf]
    tv, tf = synthetic.grid(2, 2)
    tuv = tv[tf][..., :2]
    from engine.geometry.closest import SurfaceQuery

    face, bary, _, _ = SurfaceQuery(sv, sf).closest(tv)
    W = 64
    u = (np.arange(W) + 0.5) / W
    img = np.repeat(u[None, :, None], 4, axis=0).astype(np.float32)  # the texture shows u
    args = (sf, suv, img, tf, tuv, face, bary)
    x = (np.arange(32) + 0.5) / 32
    expect = np.clip(x ** 2, 0.5 / W, 1 - 0.5 / W)[None, :]
    coarse = bake_texture(*args, size=(32, 32), padding=0, wrap="clamp")[..., 0]
    fine = bake_texture(*args, size=(32, 32), padding=0, wrap="clamp", tgt_vertices=tv, fitted_vertices=sv)[..., 0]
    via_src = bake_texture(*args, size=(32, 32), padding=0, wrap="clamp", tgt_vertices=tv, src_vertices=sv)[..., 0]
    assert np.abs(coarse - expect).max() > 0.05
    assert np.abs(fine - expect).max() < 0.01
    assert np.abs(via_src - expect).max() < 0.01


def test_image_row_zero_is_the_top_of_uv_space():
    img = np.zeros((4, 4, 1), np.float32)
    img[0] = 1.0  # top row
    assert sample_bilinear(img, np.array([[0.5, 0.99]]), "clamp")[0, 0] == pytest.approx(1.0)
    assert sample_bilinear(img, np.array([[0.5, 0.01]]), "clamp")[0, 0] == pytest.approx(0.0)
    face, _ = rasterize_uv(np.array([[[0.0, 0.5], [1.0, 0.5], [0.0, 1.0]]]), (4, 4))
    assert (face[0] >= 0).any() and (face[3] < 0).all()
