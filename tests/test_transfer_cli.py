"""``python -m engine transfer ...`` end to end on small files, and its one-line errors."""
import os

import numpy as np
import pytest

from engine.correspondence import Correspondence
from engine.geometry.closest import SurfaceQuery
from engine.mesh import load_mesh
from engine.transfer import synthetic
from engine.cli import main
from engine.transfer.cli import read_image, write_image, write_obj


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("transfer")
    sv, sf, suv = synthetic.cylinder(12, 3)
    tv, tf, tuv = synthetic.cylinder(9, 4, angle_offset=0.25)
    tv = tv * [1.0, 1.0, 1.1]  # a slightly longer target
    write_obj(str(d / "src.obj"), sv, sf, None, suv)
    write_obj(str(d / "tgt.obj"), tv, tf, None, tuv)
    write_obj(str(d / "tgt_nouv.obj"), tv, tf)
    write_obj(str(d / "src_nouv.obj"), sv, sf)
    fitted = sv * [1.0, 1.0, 1.1]
    s2t_f, s2t_b, _, _ = SurfaceQuery(tv, tf).closest(fitted)
    t2s_f, t2s_b, _, _ = SurfaceQuery(fitted, sf).closest(tv)
    Correspondence(s2t_f.astype(np.int32), s2t_b.astype(np.float32), t2s_f.astype(np.int32), t2s_b.astype(np.float32),
                   fitted.astype(np.float32), np.ones(len(sv), np.float32), {"test": True}).save(d / "match.npz")
    img = np.zeros((16, 32, 3), np.uint8)
    img[..., 0] = np.arange(32)[None, :] * 8
    write_image(str(d / "tex.png"), img)
    np.savez(d / "attrs.npz", height=sv[:, 2], weights=np.stack([sv[:, 2] / 4, 1 - sv[:, 2] / 4], 1),
             part=(sv[:, 2] > 2).astype(np.int32), mat=(np.arange(len(sf)) % 2).astype(np.int32))
    np.savez(d / "bad_weights.npz", weights=np.ones((len(sv), 2)))
    return d


def run(d, *argv):
    return main(["transfer", *[str(a) if not isinstance(a, str) else a for a in argv]])


def test_uv_forward_and_reverse(files, capsys):
    d = files
    assert run(d, "uv", d / "src.obj", d / "tgt.obj", d / "match.npz", "-o", d / "out_uv.obj") == 0
    m = load_mesh(d / "out_uv.obj")
    assert m.uv is not None and m.uv.shape == (len(m.orig_triangles), 3, 2)
    assert np.ptp(m.uv[..., 0], axis=1).max() < 0.25  # no triangle across the seam
    assert run(d, "uv", d / "src.obj", d / "tgt.obj", d / "match.npz", "-o", d / "out_rev.obj", "--reverse") == 0
    assert load_mesh(d / "out_rev.obj").uv is not None


def test_texture(files):
    d = files
    assert run(d, "texture", d / "src.obj", d / "tgt.obj", d / "match.npz", "--texture", d / "tex.png",
               "-o", d / "baked.png", "--size", "40x20", "--quiet") == 0
    out = read_image(str(d / "baked.png"))
    assert out.shape == (20, 40, 3)
    assert out[..., 0].max() > 200 and out[..., 1].max() == 0


def test_attributes(files):
    d = files
    assert run(d, "attributes", d / "src.obj", d / "tgt.obj", d / "match.npz", "--values", d / "attrs.npz",
               "--weights", "weights", "--labels", "part", "--face-labels", "mat", "-o", d / "attrs_out.npz") == 0
    tgt = load_mesh(d / "tgt.obj")
    with np.load(d / "attrs_out.npz") as z:
        np.testing.assert_allclose(z["height"], tgt.orig_vertices[:, 2] / 1.1, atol=1e-5)
        np.testing.assert_allclose(z["weights"].sum(1), 1.0, atol=1e-6)
        assert set(np.unique(z["part"])) <= {0, 1} and z["part"].dtype == np.int32
        assert len(z["mat"]) == len(tgt.orig_triangles)


def test_morph_and_retopo(files):
    d = files
    assert run(d, "morph", d / "src.obj", d / "match.npz", "-n", "3", "-o", d / "morph.npz") == 0
    with np.load(d / "morph.npz") as z:
        assert z["frames"].shape == (3, len(load_mesh(d / "src.obj").orig_vertices), 3)
    assert run(d, "retopo", d / "src.obj", d / "tgt.obj", d / "match.npz", "-o", d / "retopo.obj") == 0
    assert load_mesh(d / "retopo.obj").uv is not None  # keeps the source UVs


@pytest.mark.parametrize("argv, message", [
    (["uv", "src_nouv.obj", "tgt.obj", "match.npz"], "has no UVs"),
    (["texture", "src.obj", "tgt_nouv.obj", "match.npz", "--texture", "tex.png"], "has no UVs"),
    (["texture", "src.obj", "tgt.obj", "match.npz", "--texture", "missing.png"], "texture file not found"),
    (["uv", "src.obj", "src.obj", "match.npz"], "made for a target"),
    (["attributes", "src.obj", "tgt.obj", "match.npz", "--values", "bad_weights.npz", "--weights", "weights"], "do not sum to 1"),
    (["attributes", "src.obj", "tgt.obj", "match.npz", "--values", "attrs.npz", "--weights", "nothere"], "no array named"),
    (["morph", "src.obj", "nomatch.npz"], "not found"),
])
def test_errors_are_one_line_and_leave_no_output(files, capsys, argv, message):
    d = files
    out = d / "never.out"
    argv = [str(d / a) if a.endswith((".obj", ".npz", ".png")) else a for a in argv] + ["-o", str(out)]
    assert main(["transfer", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()
    assert not [p for p in os.listdir(d) if p.startswith(".sw-")]


def test_uv_index_out_of_range_is_reported(tmp_path, files):
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nvt 0 0\nf 1/1 2/2 3/1\nf 2/1 4/1 3/1\n")
    assert main(["transfer", "uv", str(bad), str(files / "tgt.obj"), str(files / "match.npz"), "-o", str(tmp_path / "o.obj")]) == 1
