"""The image side of BSB: loading, masks, click checks, region growing, distillation, image -> shape."""
import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.mesh import Mesh
from engine.parts.distill import DistillSettings, FeatureMLP, distill_from_samples, fourier_encode
from engine.parts.image_query import (box_mask, check_click, load_image, load_mask, object_mask_from_alpha,
                                      prepare_query)


def _rgba(h=40, w=60):
    img = np.zeros((h, w, 4), np.float32)
    img[10:30, 10:50] = [0.8, 0.3, 0.3, 1.0]  # opaque object, transparent elsewhere
    return img


def test_load_image_formats_and_errors(tmp_path):
    from PIL import Image

    rgb = (np.random.default_rng(0).random((8, 9, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (8, 9, 4) and img.dtype == np.float32 and np.all(img[..., 3] == 1.0)
    (tmp_path / "b.gif2").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="unsupported image format"):
        load_image(tmp_path / "b.gif2")
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(tmp_path / "c.png")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((4, 4, 5)))


def test_click_outside_or_on_background_is_rejected():
    img = _rgba()
    obj = object_mask_from_alpha(img)
    assert check_click((20, 15), img.shape[:2], obj) == (15, 20)
    with pytest.raises(InputError, match="outside"):
        check_click((60, 5), img.shape[:2], obj)
    with pytest.raises(InputError, match="outside"):
        check_click((-1, 5), img.shape[:2], obj)
    with pytest.raises(InputError, match="background"):
        check_click((2, 2), img.shape[:2], obj)


def test_masks_box_and_empty_mask():
    m = box_mask((10, 5, 20.5, 8), (40, 60))
    assert m.sum() == 11 * 3 and m[5, 10] and not m[8, 10]
    with pytest.raises(InputError, match="does not overlap"):
        box_mask((100, 100, 120, 130), (40, 60))
    with pytest.raises(InputError, match="empty"):
        load_mask(np.zeros((40, 60), bool), (40, 60))
    with pytest.raises(InputError, match="shape"):
        load_mask(np.ones((4, 6), bool), (40, 60))
    assert object_mask_from_alpha(np.ones((3, 3, 4), np.float32)).all()


def test_region_growing_follows_the_features():
    # features: left half of the object one way, right half another
    img = _rgba()
    feats = np.zeros((40, 60, 3), np.float32)
    feats[..., 0] = 1
    feats[:, 30:, :] = [0, 1, 0]
    q = prepare_query(img, feats, click=(15, 20))
    assert q.part_mask.any()
    rows, cols = np.nonzero(q.part_mask)
    assert cols.max() < 30 and q.object_mask[rows, cols].all()
    # with a box, the box (inside the object) is the part
    q2 = prepare_query(img, feats, box=(35, 12, 45, 25))
    assert q2.part_mask[15, 40] and not q2.part_mask[15, 20]
    with pytest.raises(InputError, match="background"):
        prepare_query(img, feats, box=(0, 0, 5, 5))


def _grid_mesh(n=12):
    y, x = np.mgrid[0:n, 0:n] / (n - 1)
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return Mesh(v, f)


def test_distillation_recovers_a_smooth_vertex_function():
    m = _grid_mesh()
    true = np.stack([np.sin(2 * m.vertices[:, 0]), np.cos(3 * m.vertices[:, 1]), m.vertices[:, 0] * m.vertices[:, 1]], 1)
    true = true / np.linalg.norm(true, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, m.n_faces, 4000)
    bary = rng.dirichlet(np.ones(3), 4000).astype(np.float32)
    pix = np.einsum("sk,skc->sc", bary, true[m.faces[faces]])
    out = distill_from_samples(m, faces, bary, pix, DistillSettings(layers=3, width=64, n_freqs=4, steps=150, lr=5e-3, batch=1024))
    assert out.shape == true.shape and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-4)
    cos = (out * true).sum(1)
    assert np.median(cos) > 0.95
    with pytest.raises(InputError, match="no rendered pixels"):
        distill_from_samples(m, np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 3)))


def test_mlp_architecture_and_encoding():
    x = torch.rand(5, 3) * 2 - 1
    enc = fourier_encode(x, 4)
    assert enc.shape == (5, 3 + 24) and torch.allclose(enc[:, :3], x)
    mlp = FeatureMLP(7, layers=6, width=16, n_freqs=4)
    lin = [mod for mod in mlp.net if isinstance(mod, torch.nn.Linear)]
    norms = [mod for mod in mlp.net if isinstance(mod, torch.nn.LayerNorm)]
    assert len(lin) == 6 and len(norms) == 5
    y = mlp(x)
    assert y.shape == (5, 7) and y.abs().max() < 1


def test_image_to_shape_end_to_end_with_a_tiny_backbone():
    """Runs the real path (render, tiny DINOv2, distillation, BSB, segmentation); features are random."""
    from engine.features.dino import DinoFeatures
    from engine.features.testing import tiny_dino_model
    from engine.parts import match_image_part

    import trimesh

    s = trimesh.creation.icosphere(subdivisions=2)
    dino = DinoFeatures(tiny_dino_model(), image_size=56)
    img = _rgba()
    r = match_image_part(img, (np.asarray(s.vertices), np.asarray(s.faces)), click=(20, 15), backbone=dino,
                         cache_dir=False, views=2, resolution=32, grid=16,
                         distill_settings=DistillSettings(layers=2, width=16, n_freqs=2, steps=5))
    a = r.arrays()
    assert a["bsb_vertex"].dtype == np.int32 and a["score"].dtype == np.float32
    assert a["target_vertices"].dtype == np.int32
    if r.matched:
        assert 0 <= r.bsb_vertex < len(s.vertices) and r.bsb_vertex in r.target_vertices
    else:
        assert len(r.target_vertices) == 0
    with pytest.raises(InputError, match="background"):
        match_image_part(img, (np.asarray(s.vertices), np.asarray(s.faces)), click=(1, 1), backbone=dino)
