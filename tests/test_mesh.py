"""Mesh loading (OBJ with polygons, OFF, PLY / STL through trimesh), cleaning, components, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from engine.errors import InputError
from engine.mesh import Mesh, load_mesh, prepare_mesh, triangulate

from .conftest import write_obj

# a unit cube as 6 quads, plus a pentagon "roof" variant below
CUBE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float)
CUBE_QUADS = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]


def test_obj_quads_and_ngons_keep_tri_to_poly(tmp_path):
    # replace the top quad by a pentagon (extra vertex on an edge midpoint) and keep a triangle too
    v = np.vstack([CUBE_V, [[0.5, 1, 1]]])
    polys = [[0, 3, 2, 1], [4, 5, 6, 8, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 8, 6], [3, 0, 4, 7]]
    pm = load_mesh(write_obj(tmp_path / "ngon.obj", v, polys))
    sizes = np.array([len(p) for p in polys])
    assert len(pm.orig_triangles) == int((sizes - 2).sum())
    np.testing.assert_array_equal(np.bincount(pm.tri_to_poly), sizes - 2)
    for t, p in zip(pm.orig_triangles, pm.tri_to_poly):  # every triangle uses its polygon's vertices
        assert set(t) <= set(polys[p])
    assert pm.mesh.n_vertices == 9 and pm.report["components"] == 1
    assert pm.mesh.area == pytest.approx(1.0)  # normalised to unit area


def test_off_file_with_quads(tmp_path):
    path = tmp_path / "cube.off"
    lines = ["OFF", "8 6 0"] + [" ".join(map(str, p)) for p in CUBE_V] + [f"4 {' '.join(map(str, q))}" for q in CUBE_QUADS]
    path.write_text("\n".join(lines) + "\n")
    pm = load_mesh(path)
    assert len(pm.orig_triangles) == 12 and pm.mesh.n_faces == 12 and pm.mesh.n_vertices == 8
    np.testing.assert_array_equal(np.bincount(pm.tri_to_poly), [2] * 6)


def test_off_faces_come_as_one_array_when_regular_and_as_polygons_otherwise(tmp_path):
    """A regular OFF (one corner count, no face colours) is read as an (m, k) array, which the
    cleaning triangulates in one go; mixed polygons or coloured faces keep the polygon list. Both
    give the same triangles and polygon of each triangle."""
    from engine.mesh_files import load_mesh_file

    head = ["OFF", "8 6 0"] + [" ".join(map(str, p)) for p in CUBE_V]
    quads = [f"4 {' '.join(map(str, q))}" for q in CUBE_QUADS]
    coloured = [q + " 255 0 0" for q in quads]
    mixed = quads[:5] + [f"3 {' '.join(map(str, CUBE_QUADS[5][:3]))}", f"3 {CUBE_QUADS[5][0]} {CUBE_QUADS[5][2]} {CUBE_QUADS[5][3]}"]
    got = {}
    for name, faces in (("regular", quads), ("coloured", coloured), ("mixed", mixed)):
        path = tmp_path / f"{name}.off"
        count = 7 if name == "mixed" else 6
        path.write_text("\n".join(head[:1] + [f"8 {count} 0"] + head[2:] + faces) + "\n")
        got[name] = (load_mesh_file(path)[1], load_mesh(path))
    assert isinstance(got["regular"][0], np.ndarray) and got["regular"][0].shape == (6, 4)
    np.testing.assert_array_equal(got["regular"][0], CUBE_QUADS)
    assert isinstance(got["coloured"][0], list) and isinstance(got["mixed"][0], list)
    for name in ("coloured",):
        np.testing.assert_array_equal(got[name][1].orig_triangles, got["regular"][1].orig_triangles)
        np.testing.assert_array_equal(got[name][1].tri_to_poly, got["regular"][1].tri_to_poly)
    assert got["mixed"][1].mesh.n_faces == 12 and len(got["mixed"][0]) == 7


@pytest.mark.parametrize("ext", [".ply", ".stl"])
def test_ply_and_stl_through_trimesh(tmp_path, ext):
    box = trimesh.creation.box()
    path = tmp_path / f"box{ext}"
    box.export(path)
    pm = load_mesh(path)
    # STL stores a triangle soup: 36 corners weld back into the 8 cube corners
    assert pm.mesh.n_vertices == 8 and pm.mesh.n_faces == 12
    assert pm.report["welded_vertices"] == (36 - 8 if ext == ".stl" else 0)
    np.testing.assert_allclose(pm.normalization.invert(pm.mesh.vertices), pm.orig_vertices[pm.clean_to_orig], atol=1e-9)


def test_cleaning_welds_drops_and_maps_unreferenced_vertices():
    s = trimesh.creation.icosphere(subdivisions=1)
    v, f = np.asarray(s.vertices), np.asarray(s.faces)
    n = len(v)
    # a duplicate of vertex 0 used by one face, an unreferenced vertex near vertex 5,
    # a zero-area face (repeated index), a collinear face, and a duplicate face (other winding)
    extra_v = np.array([v[0], v[5] * 1.01, (v[1] + v[2]) / 2])
    v2 = np.vstack([v, extra_v])
    f2 = f.copy()
    f2[np.nonzero((f == 0).any(1))[0][0]] = np.where(f[(f == 0).any(1)][0] == 0, n, f[(f == 0).any(1)][0])
    bad = np.array([[3, 3, 4], [1, 2, n + 2], f[7][::-1]])
    f2 = np.vstack([f2, bad])
    pm = prepare_mesh(v2, f2, "messy")
    r = pm.report
    assert r["welded_vertices"] == 1
    assert r["degenerate_faces_dropped"] == 2
    assert r["duplicate_faces_dropped"] == 1
    assert pm.mesh.n_faces == len(f) and pm.mesh.n_vertices == n
    # the duplicate shares its clean vertex; the unreferenced ones go to the nearest clean vertex
    assert pm.orig_to_clean[n] == pm.orig_to_clean[0]
    assert pm.orig_to_clean[n + 1] == pm.orig_to_clean[5]
    # face_to_orig points at triangles that really are the clean faces
    clean_from_orig = pm.orig_to_clean[pm.orig_triangles[pm.face_to_orig]]
    np.testing.assert_array_equal(clean_from_orig, pm.mesh.faces)


def test_components_are_labelled_largest_first():
    a = trimesh.creation.icosphere(subdivisions=2)
    b = trimesh.creation.icosphere(subdivisions=1)
    v = np.vstack([np.asarray(b.vertices) + [5, 0, 0], a.vertices])
    f = np.vstack([b.faces, np.asarray(a.faces) + len(b.vertices)])
    m = Mesh(v, f)
    assert m.n_components == 2
    labels = m.components
    assert (labels[: len(b.vertices)] == 1).all() and (labels[len(b.vertices):] == 0).all()
    assert prepare_mesh(v, f).report["components"] == 2


def test_edge_table_matches_sorting_the_face_edges_with_counts():
    """The one-pass edge table (face counts per undirected edge, non-manifold and repeated-corner
    faces included) against the sort-based reference."""
    from engine.arrays import unique_rows

    for seed in range(4):
        rng = np.random.default_rng(seed)
        m = trimesh.creation.icosphere(2)
        f = np.concatenate([m.faces, m.faces[:20], rng.integers(0, len(m.vertices) + 10, (15, 3))])
        v = np.concatenate([m.vertices, rng.normal(size=(10, 3))])
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        e.sort(axis=1)
        want, want_counts = unique_rows(e, return_counts=True)
        mesh = Mesh(v, f)
        assert np.array_equal(mesh.edges, want) and mesh.edges.dtype == np.int64
        assert np.array_equal(mesh._edge_table[1], want_counts)
        assert mesh.non_manifold_edge_count == int((want_counts > 2).sum()) > 0
        # per face corner: the count of the opposite edge
        opp = np.sort(np.stack([f[:, [1, 2]], f[:, [2, 0]], f[:, [0, 1]]], axis=1), axis=2).reshape(-1, 2)
        row = np.searchsorted(want[:, 0] * (len(v) + 1) + want[:, 1], opp[:, 0] * (len(v) + 1) + opp[:, 1])
        assert np.array_equal(mesh.opposite_edge_counts, want_counts[row].reshape(-1, 3))


def test_normalisation_is_inverted_exactly():
    rng = np.random.default_rng(1)
    s = trimesh.creation.icosphere(subdivisions=2)
    v = np.asarray(s.vertices) * [3.0, 1.0, 0.5] * 250.0 + [1000.0, -20.0, 7.0]
    pm = prepare_mesh(v, s.faces)
    m = pm.mesh
    area_centroid = (m.face_centroids * m.face_areas[:, None]).sum(0) / m.area
    np.testing.assert_allclose(area_centroid, 0, atol=1e-9)
    assert m.area == pytest.approx(1.0)
    x = rng.normal(size=(10, 3))
    np.testing.assert_allclose(pm.normalization.invert(pm.normalization.apply(x)), x, atol=1e-9)
    np.testing.assert_allclose(pm.normalization.invert(m.vertices)[pm.orig_to_clean], v, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("vertices, faces, needle", [
    (np.zeros((0, 3)), [[0, 1, 2]], "empty"),
    (np.eye(3), [], "no faces"),
    (np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), [[0, 1, 2]], "NaN"),
    (np.eye(3), [[0, 1, 5]], "out of range"),
    (np.eye(3), [[0, 1, 2]], "valid face"),
    (np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]]), [[0, 1, 2], [1, 2, 3]], "degenerate"),
    (np.ones((4, 2)), [[0, 1, 2]], "shape"),
])
def test_invalid_arrays_raise_one_line_input_errors(vertices, faces, needle):
    with pytest.raises(InputError) as exc:
        prepare_mesh(vertices, faces, "m")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_clean_mesh_keeps_the_caller_vertex_order_and_points_back_to_referenced_vertices():
    import trimesh

    from engine.mesh import prepare_mesh

    m = trimesh.creation.icosphere(2)
    v = np.vstack([m.vertices, [[5.0, 5.0, 5.0]]])  # one unreferenced vertex at the end
    pm = prepare_mesh(v, m.faces, "sphere")
    np.testing.assert_array_equal(pm.clean_to_orig, np.arange(len(m.vertices)))
    np.testing.assert_array_equal(pm.mesh.faces, m.faces)
    # the unreferenced vertex maps to its nearest clean vertex but is never a clean vertex's origin
    assert pm.orig_to_clean[-1] >= 0 and len(v) - 1 not in pm.clean_to_orig


@pytest.mark.parametrize("ext", [".glb", ".gltf"])
def test_compressed_gltf_says_so_in_one_line(tmp_path, ext):
    """A Draco-compressed glTF (common for game characters) gets one line saying how to export it,
    not the loader's failure; an uncompressed one still loads."""
    import json
    import struct

    s = trimesh.creation.box()
    plain = tmp_path / f"plain{ext}"
    s.export(plain)
    assert load_mesh(plain).mesh.n_faces == 12
    doc = {"asset": {"version": "2.0"}, "extensionsUsed": ["KHR_draco_mesh_compression"],
           "extensionsRequired": ["KHR_draco_mesh_compression"], "meshes": []}
    path = tmp_path / f"draco{ext}"
    if ext == ".gltf":
        path.write_text(json.dumps(doc))
    else:
        body = json.dumps(doc).encode()
        body += b" " * (-len(body) % 4)
        path.write_bytes(b"glTF" + struct.pack("<II", 2, 20 + len(body)) + struct.pack("<II", len(body), 0x4E4F534A) + body)
    with pytest.raises(InputError) as e:
        load_mesh(path)
    msg = str(e.value)
    assert msg.startswith(f"draco{ext}: Draco-compressed glTF is not supported") and "\n" not in msg


def test_prepare_checks_between_its_steps_and_a_raising_check_stops_it():
    """The cleaning of a large mesh takes seconds: ``check`` runs between its steps (a cancel)."""
    import trimesh

    from engine.errors import Cancelled
    from engine.mesh import prepare_mesh

    s = trimesh.creation.icosphere(subdivisions=3)
    calls = []
    prepare_mesh(s.vertices, s.faces, "sphere", check=lambda: calls.append(1))
    assert len(calls) >= 5

    def cancel_on_third():
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled("operation cancelled")

    calls.clear()
    with pytest.raises(Cancelled):
        prepare_mesh(s.vertices, s.faces, "sphere", check=cancel_on_third)
    assert len(calls) == 3


_OBJ_VERTS = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0.5 0.5 1\n"
_OBJ_UVS = "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvt 0.5 0.5\n"


@pytest.mark.parametrize("body, fast", [
    (_OBJ_VERTS + "f 1 2 5\nf 2 3 5\nf 3 4 5\nf 4 1 5\n", True),  # a scan: triangles, plain indices
    (_OBJ_VERTS + _OBJ_UVS + "f 1/1 2/2 3/3 4/4\nf 1/1 2/2 5/5 4/4\n", True),  # quads with UVs
    (_OBJ_VERTS + _OBJ_UVS + "vn 0 0 1\nf 1/1/1 2/2/1 5/5/1\nf 2/2/1 3/3/1 5/5/1\n", True),  # v/t/n
    (_OBJ_VERTS + "vn 0 0 1\nf 1//1 2//1 5//1\nf 2//1 3//1 5//1\n", True),  # v//n: no UVs
    (_OBJ_VERTS + "vt 0 0 0\nvt 1 0 0\nvt 1 1 0\nvt 0 1 0\nvt 0.5 0.5 0\nf 1/1 2/2 5/5\n", True),  # u v w
    (_OBJ_VERTS + "f 1 2 5\nf 2 3 4 5\n", False),  # triangles and a quad
    (_OBJ_VERTS + "f -5 -4 -1\nf 2 3 5\n", False),  # relative indices
    ("# exported\no body\n" + _OBJ_VERTS + "g skin\ns 1\nusemtl m\nf 1 2 5\nf 2 3 5\n", True),  # other lines skipped
    (_OBJ_VERTS + "f 1.0 2 5\nf 2 3 5\n", False),  # not an index: the line-by-line reader's error
    ("v 0 0 0 1 0 0\nv 1 0 0 1 0 0\nv 0 1 0 1 0 0\nf 1 2 3\n", False),  # vertex colours
    (_OBJ_VERTS + _OBJ_UVS + "f 1/1 2/2 5/5\nf 2 3 5\n", False),  # UVs on some faces only
])
def test_obj_whole_file_reader_gives_the_line_by_line_readers_result(tmp_path, monkeypatch, body, fast):
    """The common OBJ (every face alike, positive indices) is parsed in a few whole-file passes;
    any other goes line by line; both give the same mesh, corner UVs and polygon of each triangle."""
    from engine import mesh_files

    path = tmp_path / "m.obj"
    path.write_text(body)
    if "1.0" in body:  # both readers refuse it with the same one line
        with pytest.raises(InputError, match="m.obj: cannot parse mesh"):
            mesh_files.load_mesh_file(path)
        return
    got = mesh_files.load_mesh_file(path)
    assert isinstance(got[1], np.ndarray) == fast  # the whole-file parse returns arrays
    monkeypatch.setattr(mesh_files, "_read_obj_fast", lambda lines, name: None)
    ref = mesh_files.load_mesh_file(path)
    np.testing.assert_array_equal(got[0], ref[0])
    for x, y in zip(triangulate(got[1], len(got[0])), triangulate(ref[1], len(ref[0]))):
        np.testing.assert_array_equal(x, y)  # the triangles and the polygon of each
    assert (got[2] is None) == (ref[2] is None)
    if got[2] is not None:
        assert len(got[2]) == len(ref[2])
        for x, y in zip(got[2], ref[2]):
            np.testing.assert_array_equal(x, y)


def test_obj_uv_index_out_of_range_is_one_line_naming_the_file(tmp_path):
    from engine import mesh_files

    path = tmp_path / "bad.obj"
    path.write_text(_OBJ_VERTS + _OBJ_UVS + "f 1/1 2/2 5/9\n")
    with pytest.raises(InputError, match="bad.obj: UV index out of range in a face"):
        mesh_files.load_mesh_file(path)
