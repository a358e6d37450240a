"""The rasteriser: the pure-torch backend against a per-pixel reference, cameras, shading, errors.

The nvdiffrast backend is compared against the torch one on CUDA (marked gpu).
"""

import numpy as np
import pytest
import torch

from engine.errors import BackendUnavailable, InputError
from engine.render import orbit_cameras, rasterize
from engine.render.cameras import bounding_radius
from engine.render.shading import Appearance, load_texture, shade


def _two_boxes():
    """A small scene with occlusion: a box in front of a larger box, plus a slanted triangle."""
    import trimesh

    a = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    b = trimesh.creation.box(extents=(0.4, 0.6, 0.3))
    b.apply_translation((0.2, 0.1, 0.6))
    v = np.concatenate([a.vertices, b.vertices, [[-0.9, -0.9, 0.2], [0.9, -0.3, 0.9], [-0.2, 0.8, -0.7]]])
    f = np.concatenate([a.faces, b.faces + len(a.vertices), [[16, 17, 18]]])
    return torch.tensor(v, dtype=torch.float32), torch.tensor(f, dtype=torch.int64)


def reference_raster(v, f, cams, res):
    """Per-pixel loop: every pixel centre tested against every triangle (float64)."""
    h, w = res
    xy, depth = cams.project(v.double(), res)
    k = len(cams)
    tid = np.full((k, h, w), -1)
    bary = np.zeros((k, h, w, 3))
    for view in range(k):
        p = xy[view].double().numpy()
        z = depth[view].double().numpy()
        for i in range(h):
            for j in range(w):
                c = np.array([j + 0.5, i + 0.5])
                best, best_t, best_b = np.inf, -1, None
                for t, (a, b_, c_) in enumerate(f.numpy()):
                    p0, p1, p2 = p[a], p[b_], p[c_]
                    e1, e2 = p1 - p0, p2 - p0
                    area = e1[0] * e2[1] - e2[0] * e1[1]
                    if abs(area) < 1e-12:
                        continue
                    d = c - p0
                    b1 = (d[0] * e2[1] - e2[0] * d[1]) / area
                    b2 = (e1[0] * d[1] - d[0] * e1[1]) / area
                    b0 = 1 - b1 - b2
                    if min(b0, b1, b2) < 0:
                        continue
                    q = np.array([b0 / z[a], b1 / z[b_], b2 / z[c_]])
                    dep = 1.0 / q.sum()
                    if dep < best:
                        best, best_t, best_b = dep, t, q / q.sum()
                tid[view, i, j] = best_t
                if best_t >= 0:
                    bary[view, i, j] = best_b
    return tid, bary


def test_torch_raster_matches_per_pixel_reference():
    v, f = _two_boxes()
    cams = orbit_cameras(3, elevations=(25.0, -15.0), fit_radius=bounding_radius(v.numpy()), fov=45.0)
    res = (24, 20)
    r = rasterize(v, f, cams, res, backend="torch")
    ref_t, ref_b = reference_raster(v, f, cams, res)
    got_t = r.triangle_id.numpy()
    agree = got_t == ref_t
    # only ties exactly on shared edges may differ
    assert agree.mean() > 0.995, agree.mean()
    both = agree & (ref_t >= 0)
    assert both.sum() > 200
    np.testing.assert_allclose(r.bary.numpy()[both], ref_b[both], atol=2e-4)
    assert (r.mask.numpy() == (ref_t >= 0)).mean() > 0.995


def test_raster_outputs_are_consistent():
    import trimesh

    sph = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    v = torch.tensor(sph.vertices, dtype=torch.float32)
    f = torch.tensor(sph.faces)
    cams = orbit_cameras(4, elevations=(30.0, 0.0), fit_radius=0.8)
    r = rasterize(v, f, cams, 64)
    assert r.triangle_id.shape == (4, 64, 64) and r.bary.shape == (4, 64, 64, 3)
    m = r.mask
    assert 0.2 < m.float().mean() < 0.9
    assert torch.all(r.triangle_id[~m] == -1) and torch.all(r.depth[~m] == 0)
    b = r.bary[m]
    assert torch.all(b >= -1e-5) and torch.allclose(b.sum(-1), torch.ones(len(b)), atol=1e-5)
    # the visible hemisphere: depth between (distance - radius) and distance; normals face the camera
    dist = cams.positions.norm(dim=-1)
    for k in range(4):
        d = r.depth[k][m[k]]
        assert d.min() >= dist[k] - 0.8 - 1e-3 and d.max() <= dist[k] + 1e-3
        pts = r.interpolate(v, f)[k][m[k]]
        to_cam = cams.positions[k] - pts
        assert ((r.normal[k][m[k]] * to_cam).sum(-1) > 0).float().mean() > 0.99
    # pixels agree with projecting the interpolated 3D point
    pts = r.interpolate(v, f)
    xy, _ = cams.project(pts[0][m[0]], (64, 64))
    ii, jj = m[0].nonzero(as_tuple=True)
    assert torch.allclose(xy[0][:, 0], jj.float() + 0.5, atol=1e-3)
    assert torch.allclose(xy[0][:, 1], ii.float() + 0.5, atol=1e-3)


def test_image_orientation_up_is_up():
    """A point above the centre (world +y) lands in the upper half of the image."""
    cams = orbit_cameras(4, elevations=(0.0,), fit_radius=1.0)
    xy, _ = cams.project(torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]]), (100, 100))
    assert torch.all(xy[:, 0, 1] < 50) and torch.allclose(xy[:, 1], torch.full((4, 2), 50.0), atol=1e-3)


def test_torch_raster_speed_10k_faces():
    import time

    import trimesh

    sph = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces
    sph2 = sph.copy()
    sph2.apply_translation((1.2, 0, 0))
    both = trimesh.util.concatenate([sph, sph2])  # 10240 faces
    v = torch.tensor(both.vertices, dtype=torch.float32)
    f = torch.tensor(both.faces)
    cams = orbit_cameras(8, fit_radius=bounding_radius(both.vertices))
    t = time.perf_counter()
    r = rasterize(v, f, cams, 256, backend="torch")
    dt = time.perf_counter() - t
    assert r.mask.any(dim=(1, 2)).all()
    assert dt < 10.0  # ~1 s on one core; generous bound for a shared CI box


def test_bad_inputs_give_clear_errors():
    v, f = _two_boxes()
    cams = orbit_cameras(2)
    with pytest.raises(InputError, match="backend"):
        rasterize(v, f, cams, 16, backend="opengl")
    with pytest.raises(InputError, match="out of range"):
        rasterize(v, f + 100, cams, 16)
    with pytest.raises(InputError, match="NaN"):
        rasterize(v * float("nan"), f, cams, 16)
    with pytest.raises(InputError, match="resolution"):
        rasterize(v, f, cams, 0)
    with pytest.raises(InputError, match="elevations"):
        orbit_cameras(4, elevations=(90.0,))
    with pytest.raises(InputError, match="views"):
        orbit_cameras(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_nvdiffrast_without_cuda_is_backend_unavailable():
    v, f = _two_boxes()
    with pytest.raises(BackendUnavailable, match="CUDA"):
        rasterize(v, f, orbit_cameras(2), 16, backend="nvdiffrast")
    # auto falls back to the torch backend
    assert rasterize(v, f, orbit_cameras(2), 16, backend="auto").backend == "torch"


def test_clay_shading_lights_the_covered_pixels_as_whole_images_would():
    """shade_lambert lights only the covered pixels: the same images, bit for bit, as the
    headlight computed over whole images and composed over the background (the reference)."""
    from engine.render.shading import shade_lambert

    v, f = _two_boxes()
    cams = orbit_cameras(3, elevations=(20.0,), fit_radius=1.5)
    r = rasterize(v, f, cams, (48, 40), backend="torch")
    albedo = torch.rand(3, 48, 40, 3, generator=torch.Generator().manual_seed(1))
    for alb, background in ((None, 1.0), (albedo, 0.25)):
        pts = r.interpolate(v, f)
        to_cam = cams.positions[:, None, None, :] - pts
        to_cam = to_cam / to_cam.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        light = 0.35 + 0.65 * (r.normal * to_cam).sum(-1).abs()
        base = alb if alb is not None else torch.full_like(pts, 0.8)
        m = r.mask.unsqueeze(-1).float()
        want = (base * light.unsqueeze(-1) * m + background * (1 - m)).permute(0, 3, 1, 2).clamp(0, 1)
        got = shade_lambert(r, cams, v, f, background=background, albedo=alb)
        assert got.shape == (3, 3, 48, 40) and torch.equal(got, want)


def test_shading_modes_and_colours(tmp_path):
    v, f = _two_boxes()
    cams = orbit_cameras(2, fit_radius=bounding_radius(v.numpy()))
    r = rasterize(v, f, cams, 32)
    clay = shade(r, cams, v, f)
    assert clay.shape == (2, 3, 32, 32) and clay.min() >= 0 and clay.max() <= 1
    bg = ~r.mask
    assert torch.all(clay.permute(0, 2, 3, 1)[bg] == 1.0)
    nrm = shade(r, cams, v, f, mode="normal")
    assert torch.allclose(nrm.permute(0, 2, 3, 1)[r.mask], r.normal[r.mask] * 0.5 + 0.5)
    red = np.zeros((len(v), 3), np.float32)
    red[:, 0] = 1.0
    col = shade(r, cams, v, f, Appearance(vertex_colors=red)).permute(0, 2, 3, 1)[r.mask]
    assert torch.all(col[:, 1:] == 0) and torch.all(col[:, 0] > 0)
    # a UV texture: left half green, right half blue; every face maps to u < 0.5
    tex = np.zeros((8, 8, 3), np.float32)
    tex[:, :4, 1] = 1.0
    tex[:, 4:, 2] = 1.0
    fuv = np.tile(np.array([[0.1, 0.1], [0.3, 0.1], [0.2, 0.9]], np.float32), (len(f), 1, 1))
    col = shade(r, cams, v, f, Appearance(face_uv=fuv, texture=tex)).permute(0, 2, 3, 1)[r.mask]
    assert torch.all(col[:, 1] > 0) and torch.allclose(col[:, 2], torch.zeros(len(col)), atol=1e-6)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read texture"):
        load_texture(bad)
    with pytest.raises(InputError, match="not found"):
        load_texture(tmp_path / "missing.png")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvdiffrast_matches_torch_backend():
    pytest.importorskip("nvdiffrast.torch")
    import trimesh

    sph = trimesh.creation.icosphere(subdivisions=4)
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    box.apply_translation((0.0, 0.0, 1.1))
    mesh = trimesh.util.concatenate([sph, box])
    v = torch.tensor(mesh.vertices, dtype=torch.float32, device="cuda")
    f = torch.tensor(mesh.faces, device="cuda")
    cams = orbit_cameras(6, fit_radius=bounding_radius(mesh.vertices), device="cuda")
    a = rasterize(v, f, cams, (128, 160), backend="torch")
    b = rasterize(v, f, cams, (128, 160), backend="nvdiffrast")
    assert b.backend == "nvdiffrast"
    same = a.triangle_id == b.triangle_id
    assert same.float().mean() > 0.99
    both = same & a.mask
    assert torch.allclose(a.bary[both], b.bary[both], atol=1e-3)
    assert torch.allclose(a.depth[both], b.depth[both], atol=1e-3)
    assert (a.mask == b.mask).float().mean() > 0.995


def test_appearance_from_an_obj_with_uvs(tmp_path):
    """Corner UVs of the file follow the clean faces (here u, v = the vertex's x, y)."""
    from PIL import Image

    from engine.mesh import load_mesh
    from engine.render.shading import appearance_from_prepared

    lines = []
    n = 4
    for i in range(n):
        for j in range(n):
            lines.append(f"v {j / (n - 1)} {i / (n - 1)} 0")
            lines.append(f"vt {j / (n - 1)} {i / (n - 1)}")
    for i in range(n - 1):
        for j in range(n - 1):
            a = i * n + j + 1
            lines.append(f"f {a}/{a} {a + 1}/{a + 1} {a + n + 1}/{a + n + 1} {a + n}/{a + n}")
    path = tmp_path / "grid.obj"
    path.write_text("\n".join(lines) + "\n")
    pm = load_mesh(path)
    img = tmp_path / "tex.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img)
    app = appearance_from_prepared(pm, texture=str(img))
    assert app.face_uv.shape == (pm.mesh.n_faces, 3, 2)
    orig_xy = pm.orig_vertices[pm.clean_to_orig][:, :2]
    np.testing.assert_allclose(app.face_uv, orig_xy[pm.mesh.faces], atol=1e-6)
    assert appearance_from_prepared(pm) is None
