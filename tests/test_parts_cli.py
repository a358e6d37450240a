"""``python -m engine part`` (engine.parts.cli): outputs, exit codes and one-line errors."""
import argparse
import os

import numpy as np
import pytest

from engine.parts import cli


def _write_obj(path, v, f):
    with open(path, "w") as fh:
        for p in v:
            fh.write(f"v {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n")
        for t in f:
            fh.write(f"f {t[0] + 1} {t[1] + 1} {t[2] + 1}\n")


def _creature(stretch=1.0):
    """A sphere with a head, two arms and a tail (the tail makes front and back differ)."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=3)
    u = s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True)
    r = np.full(len(u), 0.5)
    lab = np.zeros(len(u), int)
    for i, (d, a, w) in enumerate([([0, 0, 1], 0.5, 0.35), ([1, 0, 0.2], 0.9, 0.22), ([-1, 0, 0.2], 0.9, 0.22), ([0, -1, -0.5], 0.7, 0.2)]):
        d = np.asarray(d, float) / np.linalg.norm(d)
        bump = a * np.exp(-((np.arccos(np.clip(u @ d, -1, 1)) / w) ** 2))
        r += bump
        lab[bump > 0.15 * a] = i + 1
    v = u * r[:, None]
    v[:, 2] *= stretch
    return v, np.asarray(s.faces), lab


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("part_cli")
    vs, fs, ls = _creature()
    vt, ft, lt = _creature(1.2)
    _write_obj(d / "src.obj", vs, fs)
    _write_obj(d / "tgt.obj", vt, ft)
    np.save(d / "arm.npy", np.nonzero(ls == 2)[0].astype(np.int64))
    np.save(d / "empty.npy", np.zeros(0, np.int64))
    return d, lt


def test_source_part_query_writes_the_contract_keys(files, capsys):
    d, lt = files
    out = d / "out.npz"
    code = cli.main(["--source", str(d / "src.obj"), "--part", str(d / "arm.npy"), str(d / "tgt.obj"), "-o", str(out)])
    assert code == 0
    with np.load(out) as z:
        assert set(z.files) == {"target_vertices", "bsb_vertex", "score"}
        assert z["target_vertices"].dtype == np.int32 and z["bsb_vertex"].dtype == np.int32
        assert z["score"].dtype == np.float32
        b = int(z["bsb_vertex"])
        assert b >= 0 and lt[b] == 2  # the same arm on the target
        assert b in z["target_vertices"]
    assert "bsb vertex" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--part", "{d}/empty.npy", "--source", "{d}/src.obj"], "vertex group is empty"),
        (["--part", "{d}/missing.npy", "--source", "{d}/src.obj"], "not found"),
        (["--image", "{d}/src.obj", "--click", "1", "1"], "unsupported image format"),
        (["--source", "{d}/src.obj"], "--part"),
        (["--image", "{d}/x.png"], "--click"),
    ],
)
def test_bad_input_gives_one_line_error_and_no_output(files, capsys, args, message):
    d, _ = files
    out = d / "bad.npz"
    code = cli.main([a.format(d=d) for a in args] + [str(d / "tgt.obj"), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert not [p for p in os.listdir(d) if p.startswith(".sw-")]  # no temp leftovers


def test_click_outside_the_image(files, capsys, tmp_path):
    from PIL import Image

    d, _ = files
    Image.fromarray(np.full((10, 12, 3), 200, np.uint8)).save(tmp_path / "ref.png")
    code = cli.main(["--image", str(tmp_path / "ref.png"), "--click", "50", "3", str(d / "tgt.obj"), "-o", str(tmp_path / "o.npz")])
    assert code == 2 and "outside" in capsys.readouterr().err


def test_add_subparser_registers_part():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    cli.add_subparser(sub)
    ns = ap.parse_args(["part", "--source", "a.obj", "--part", "m.npy", "t.obj", "-o", "o.npz"])
    assert ns.func is cli.run and ns.target == "t.obj" and ns.k == 100
