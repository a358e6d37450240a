"""UV transfer: exact through identity and affine maps, seam-aware on a cylinder and a cube atlas."""
import numpy as np
import pytest

from engine.errors import InputError
from engine.geometry.closest import SurfaceQuery
from engine.transfer import synthetic
from engine.transfer.uv import transfer_uvs, transfer_uvs_to_source, uv_stretch


def closest_map(v_from, v_on, f_on):
    face, bary, _, _ = SurfaceQuery(v_on, f_on).closest(v_from)
    return face, bary


def test_identity_map_returns_the_uvs_exactly_including_seam_corners():
    v, f, uv = synthetic.cylinder(12, 3)
    face, bary = synthetic.identity_map(f, len(v))
    # the seam vertices map into triangles on one side of the seam only
    assert (uv[face, np.argmax(bary, 1), 0] == 0).any() or (uv[face, np.argmax(bary, 1), 0] == 1).any()
    res = transfer_uvs(f, uv, f, face, bary)
    np.testing.assert_array_equal(res.corner_uv, uv.astype(np.float32))
    assert len(res.seam_faces) == 0
    assert res.corner_uv.dtype == np.float32 and res.corner_uv.shape == (len(f), 3, 2)


def test_affine_uvs_follow_exactly_onto_another_triangulation():
    sv, sf = synthetic.grid(6, 5)
    A = np.array([[0.7, 0.2], [-0.3, 0.9]])
    b = np.array([0.1, -0.2])
    suv = sv[sf][..., :2] @ A.T + b
    tv, tf = synthetic.grid(9, 7, jitter=0.3, seed=1)
    face, bary = closest_map(tv, sv, sf)
    res = transfer_uvs(sf, suv, tf, face, bary)
    np.testing.assert_allclose(res.corner_uv, tv[tf][..., :2] @ A.T + b, atol=1e-6)
    assert len(res.seam_faces) == 0


@pytest.mark.parametrize("with_vertices", [False, True])
def test_cylinder_seam_gives_no_stretched_faces(with_vertices):
    sv, sf, suv = synthetic.cylinder(16, 4)
    tv, tf, _ = synthetic.cylinder(13, 5, angle_offset=0.3)  # target triangles cross the seam
    face, bary = closest_map(tv, sv, sf)
    res = transfer_uvs(sf, suv, tf, face, bary, src_vertices=sv if with_vertices else None)
    stretch = uv_stretch(res.corner_uv, tv, tf)
    assert stretch.min() > 0.9 and stretch.max() < 1.1
    assert np.ptp(res.corner_uv[..., 0], axis=1).max() < 0.2  # no triangle spans the layout
    # the seam triangles are reported, and naive interpolation would have stretched exactly those
    naive = np.einsum("nk,nkc->nc", bary, suv[face])[tf]
    naive_bad = np.nonzero(uv_stretch(naive, tv, tf) > 2)[0]
    assert len(naive_bad) > 0
    assert set(naive_bad) <= set(res.seam_faces.tolist())


def test_cube_atlas_with_mirrored_island_keeps_every_face_in_one_island():
    sv, sf, suv = synthetic.uv_cube(3, mirror_face=5)
    tv, tf, _ = synthetic.uv_cube(4, shift=0.3, mirror_face=None)
    face, bary = closest_map(tv, sv, sf)
    res = transfer_uvs(sf, suv, tf, face, bary, src_vertices=sv)
    stretch = uv_stretch(res.corner_uv, tv, tf)
    assert stretch.min() > 0.99 and stretch.max() < 1.01
    # orientation in UV follows the source island (mirrored side stays mirrored, nothing flips)
    e1 = res.corner_uv[:, 1] - res.corner_uv[:, 0]
    e2 = res.corner_uv[:, 2] - res.corner_uv[:, 0]
    signed = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    side = np.argmax(np.abs(tv[tf].mean(1)), axis=1) * 2 + (tv[tf].mean(1)[np.arange(len(tf)), np.argmax(np.abs(tv[tf].mean(1)), axis=1)] < 0)
    for s in np.unique(side):
        assert len(np.unique(np.sign(signed[side == s]))) == 1
    assert res.src_islands.max() + 1 == 6


def test_reverse_direction_puts_target_uvs_on_the_source():
    tv, tf, tuv = synthetic.cylinder(10, 3)
    _, sf, _ = synthetic.cylinder(10, 3)
    face, bary = synthetic.identity_map(tf, len(tv))
    res = transfer_uvs_to_source(tf, tuv, sf, face, bary, tgt_vertices=tv)
    np.testing.assert_array_equal(res.corner_uv, tuv.astype(np.float32))


def test_bad_inputs_raise_one_line_input_errors():
    v, f, uv = synthetic.cylinder(8, 2)
    face, bary = synthetic.identity_map(f, len(v))
    cases = [
        dict(src_corner_uv=None),
        dict(src_corner_uv=uv[:-1]),
        dict(tgt_to_src_face=face + len(f)),
        dict(tgt_to_src_bary=np.full_like(bary, np.nan)),
        dict(tgt_faces=f + 1000),
    ]
    for bad in cases:
        kw = dict(src_faces=f, src_corner_uv=uv, tgt_faces=f, tgt_to_src_face=face, tgt_to_src_bary=bary)
        kw.update(bad)
        with pytest.raises(InputError) as ei:
            transfer_uvs(**kw)
        assert "\n" not in str(ei.value)


def test_triangles_of_one_polygon_share_their_corner_uvs():
    sv, sf, suv = synthetic.cylinder(16, 4)
    tv, tf, _ = synthetic.cylinder(11, 3, angle_offset=0.31)  # triangle pairs (0,1,2), (0,2,3) are quads
    face, bary = closest_map(tv, sv, sf)
    res = transfer_uvs(sf, suv, tf, face, bary, tgt_tri_to_poly=np.arange(len(tf)) // 2)
    a, b = res.corner_uv[0::2], res.corner_uv[1::2]
    np.testing.assert_array_equal(a[:, 0], b[:, 0])  # the fan's first corner
    np.testing.assert_array_equal(a[:, 2], b[:, 1])  # the diagonal's other end
    stretch = uv_stretch(res.corner_uv, tv, tf)
    assert stretch.min() > 0.9 and stretch.max() < 1.1
    with pytest.raises(InputError, match="tgt_tri_to_poly"):
        transfer_uvs(sf, suv, tf, face, bary, tgt_tri_to_poly=np.zeros(3, int))
