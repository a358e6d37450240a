"""Body keypoints: ray geometry, the real MediaPipe pose model on a generated figure, caching,
the pair decision, the verdict and the soft keypoint guidance."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.correspond.keypoint_guidance import KeypointGuidance, joint_regions
from engine.correspond.keypoint_pairs import detect_pair, keypoint_verdict
from engine.errors import InputError
from engine.keypoints.detect import Keypoints, KeypointSettings, detect_keypoints, detect_keypoints_many, not_found
from engine.keypoints.triangulation import camera_rays, triangulate
from engine.keypoints.pose_model import BODY_NAMES, mediapipe_status, mirror_name
from engine.mesh import Mesh, prepare_mesh
from engine.render.cameras import orbit_cameras
from engine.samples import humanoid

needs_mediapipe = pytest.mark.skipif(not mediapipe_status()[0], reason="mediapipe is not installed")


def test_triangulate_recovers_the_point_and_drops_a_disagreeing_ray():
    rng = np.random.default_rng(0)
    p = np.array([0.2, -0.1, 0.4])
    origins = rng.normal(size=(6, 3)) * 3
    dirs = p - origins
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs[2] = np.array([1.0, 0.0, 0.0])  # one view saw something else
    got, inliers = triangulate(origins, dirs, np.ones(6), tolerance=0.05)
    assert np.allclose(got, p, atol=1e-9)
    assert inliers.tolist() == [True, True, False, True, True, True]
    # two rays cannot be checked against each other: refused with the default minimum of three
    assert triangulate(origins[:2], dirs[:2], np.ones(2), tolerance=0.05)[0] is None


def test_camera_rays_pass_through_the_projected_points():
    cams = orbit_cameras(4, elevations=(10.0,), center=(0.0, 0.5, 0.0), fit_radius=1.0)
    pts = torch.tensor([[0.1, 0.7, -0.2], [-0.3, 0.2, 0.25]])
    clip = cams.clip(pts)  # (K, n, 4)
    ndc = (clip[..., :2] / clip[..., 3:]).double().numpy()
    res = 256
    xy = np.stack([(ndc[..., 0] + 1) / 2 * res, (1 - ndc[..., 1]) / 2 * res], axis=-1)
    origins, dirs = camera_rays(cams, xy, res)
    for k in range(4):
        for j in range(2):
            off = pts[j].double().numpy() - origins[k]
            assert np.linalg.norm(off - dirs[k, j] * (off @ dirs[k, j])) < 1e-5


@pytest.fixture(scope="module")
def figure():
    """The generated figure with its left arm raised, its keypoints detected (real MediaPipe)."""
    if not mediapipe_status()[0]:
        pytest.skip("mediapipe is not installed")
    v, f = humanoid(left_arm_raise_deg=80.0)
    return v, f, detect_keypoints(v, f, use_cache=False)


@needs_mediapipe
def test_generated_figure_has_named_landmarks_on_the_right_limbs(figure):
    v, f, kp = figure
    assert kp.humanoid and kp.views_found >= 6
    assert kp.found(0.3).sum() >= 20
    p = {n: kp.points[kp.index(n)] for n in BODY_NAMES}
    # the figure faces +Z with its left side towards +X; its left arm is raised sideways
    assert p["left_wrist"][0] > 0.5 and p["left_wrist"][1] > 1.2
    assert p["right_wrist"][0] < -0.1 and p["right_wrist"][1] < 1.0
    for side, sign in (("left", 1), ("right", -1)):
        for part in ("shoulder", "hip", "knee", "ankle"):
            assert sign * p[f"{side}_{part}"][0] > 0.03, f"{side}_{part} on the wrong side"
    assert p["nose"][1] > p["left_shoulder"][1] > p["left_hip"][1] > p["left_knee"][1] > p["left_ankle"][1]
    assert p["nose"][2] > 0.0  # the face is at the front
    left, up, front = kp.frame()
    assert left[0] > 0.9 and up[1] > 0.9 and front[2] > 0.9
    # every landmark vertex lies on the surface near its joint
    near = np.linalg.norm(v[kp.vertices[kp.found()]] - kp.points[kp.found()], axis=1)
    assert near.max() < 0.15


@needs_mediapipe
def test_figure_laid_on_its_side_and_scaled_is_found_with_its_frame(figure, tmp_path):
    v, f, kp0 = figure
    rot = Rotation.from_euler("z", 90, degrees=True)  # lying on its side, head towards -X
    kp = detect_keypoints(rot.apply(v) * 100.0, f, cache_dir=str(tmp_path))
    assert kp.humanoid
    assert np.allclose(kp.frame(), rot.apply(kp0.frame()), atol=0.25)
    both = kp.found(0.3) & kp0.found(0.3)
    err = np.linalg.norm(kp.points[both] / 100.0 - rot.apply(kp0.points[both]), axis=1)
    assert np.median(err) < 0.05  # metres, on a 1.75 m figure


@needs_mediapipe
def test_keypoints_are_cached_per_mesh_and_settings(tmp_path):
    v, f = humanoid()

    class Counting:
        def __init__(self):
            from engine.keypoints.pose_model import MediaPipePose

            self.inner, self.calls = MediaPipePose(), 0
            self.name, self.names = self.inner.name, self.inner.names

        def detect(self, images):
            self.calls += 1
            return self.inner.detect(images)

    model = Counting()
    a = detect_keypoints(v, f, model=model, cache_dir=str(tmp_path))
    n = model.calls
    b = detect_keypoints(v, f, model=model, cache_dir=str(tmp_path))
    assert n >= 1 and model.calls == n  # the second call read the cache
    assert np.array_equal(a.vertices, b.vertices) and a.humanoid == b.humanoid
    detect_keypoints(v, f, model=model, cache_dir=str(tmp_path), settings=KeypointSettings(views=6))
    assert model.calls > n  # other settings: detected again


@needs_mediapipe
def test_several_meshes_overlapped_give_each_ones_keypoints_and_stop_at_a_mesh_without_a_body(small_pair, tmp_path):
    """``detect_keypoints_many`` (the model on its helper thread, the renders and the caller's
    ``meanwhile`` on this one) gives what one-by-one detection gives; with ``stop_at_miss`` a mesh
    after one without a body is not searched; ``meanwhile`` runs once, also when all is cached;
    a cancel raised from the progress leaves no thread behind."""
    import threading

    creature = prepare_mesh(small_pair.source_vertices, small_pair.source_faces, "creature").mesh
    figure = humanoid()
    raised = humanoid(left_arm_raise_deg=80.0)
    alone = [detect_keypoints(*m, use_cache=False) for m in (figure, raised)]
    calls = []
    both = detect_keypoints_many([figure, raised], use_cache=False, meanwhile=lambda: calls.append(1))
    assert calls == [1]
    for a, b in zip(alone, both):
        assert a.humanoid and b.humanoid and np.array_equal(a.vertices, b.vertices)
        assert np.allclose(a.points, b.points, equal_nan=True)
    first, second = detect_keypoints_many([(creature.vertices, creature.faces), figure], cache_dir=str(tmp_path),
                                          stop_at_miss=True)
    assert not first.humanoid and second is None
    # the creature is cached now: known without a body, nothing is rendered, meanwhile still runs
    assert detect_keypoints_many([(creature.vertices, creature.faces), figure], cache_dir=str(tmp_path),
                                 stop_at_miss=True, meanwhile=lambda: calls.append(2))[1] is None
    assert calls == [1, 2]

    class Cancel(Exception):
        pass

    class Stop:
        def update(self, fraction):
            raise Cancel

    before = threading.active_count()
    with pytest.raises(Cancel):
        detect_keypoints_many([figure, raised], use_cache=False, progress=Stop())
    assert threading.active_count() == before


@needs_mediapipe
def test_a_creature_is_not_humanoid_and_on_mode_names_the_mesh(small_pair, tmp_path):
    s = prepare_mesh(small_pair.source_vertices, small_pair.source_faces, "creature").mesh
    h = prepare_mesh(*humanoid(), "figure").mesh
    assert not detect_keypoints(s.vertices, s.faces, cache_dir=str(tmp_path)).humanoid
    with pytest.raises(InputError, match="no body found on the target mesh 'creature'"):
        detect_pair(h, s, "on", cache_dir=str(tmp_path))
    pk = detect_pair(h, s, "auto", cache_dir=str(tmp_path))
    assert not pk.used and "creature" in pk.reason and "geometric" in pk.reason
    assert detect_pair(h, s, "off").reason == "keypoints off"
    with pytest.raises(InputError, match="keypoints: unknown mode 'yes'"):
        detect_pair(h, s, "yes")


@needs_mediapipe
def test_a_working_copy_that_hides_the_body_is_searched_again_on_the_mesh_it_came_from(tmp_path):
    """A working copy too coarse to show the body (the generated figure decimated to ~300 vertices:
    its chain of joints breaks, as MakeHuman's 3000-vertex copy with its helper geometry did) is
    searched again on the finer mesh it was made from: the landmarks land on the copy's vertices
    nearest to the finer mesh's, the target is searched after it and the pairs are used; without
    the finer mesh the copy alone shows no body and "on" names it."""
    from scipy.spatial import cKDTree

    from engine.geometry.working_copy import WorkingCopy

    full = prepare_mesh(*humanoid(), "figure").mesh
    copy = WorkingCopy(full, 250).mesh
    other = prepare_mesh(*humanoid(left_arm_raise_deg=30.0), "other").mesh
    cache = str(tmp_path)
    alone = detect_pair(copy, other, "auto", cache_dir=cache)
    assert not alone.used and not alone.source.humanoid and alone.target is None
    with pytest.raises(InputError, match="no body found on the source mesh 'figure'"):
        detect_pair(copy, other, "on", cache_dir=cache)
    pk = detect_pair(copy, other, "on", cache_dir=cache, finer=(full, None))
    assert pk.used and pk.source.humanoid and pk.target.humanoid
    assert pk.meta()["source"]["found_on_vertices"] == full.n_vertices and "found_on_vertices" not in pk.meta()["target"]
    fine = detect_keypoints(full.vertices, full.faces, cache_dir=cache)
    found = fine.found()
    assert np.array_equal(pk.source.found(), found) and np.array_equal(pk.source.points, fine.points, equal_nan=True)
    at = full.vertices[fine.vertices[found]]
    dist, nearest = cKDTree(copy.vertices).query(at)
    assert np.array_equal(pk.source.vertices[found], nearest)
    assert dist.max() < 0.1 * np.linalg.norm(np.ptp(full.vertices, axis=0))
    assert pk.pairs[:, 0].max() < copy.n_vertices


def test_nearly_a_body_is_a_chain_seen_at_every_level_by_enough_views():
    """What earns a working copy a second search on its finer mesh: every level of the chain
    seen (one side) with at least MediaPipe's visibility threshold, the torso in enough views."""
    from engine.keypoints.detect import CHAIN, MIN_VISIBILITY, nearly_a_body

    def kp(ankle: float, views: int = 8, humanoid: bool = False) -> Keypoints:
        k = not_found()
        for level in CHAIN:
            for n in level:
                k.confidence[k.index(n)] = 0.9
        k.confidence[k.index("left_ankle")], k.confidence[k.index("right_ankle")] = ankle, 0.1
        k.views_found, k.humanoid = views, humanoid
        return k

    assert nearly_a_body(kp(MIN_VISIBILITY + 0.05), 4)
    assert not nearly_a_body(kp(MIN_VISIBILITY - 0.05), 4)  # a level barely seen: an animal's legs
    assert not nearly_a_body(kp(0.9, views=3), 4)
    assert not nearly_a_body(kp(0.9, humanoid=True), 4)  # found already


@needs_mediapipe
def test_a_creature_copy_is_not_searched_again_on_its_finer_mesh(small_pair, tmp_path, monkeypatch):
    """A copy that shows no body at all (a creature) costs no second search."""
    from engine.correspond import keypoint_pairs
    from engine.geometry.working_copy import WorkingCopy

    def never(*a, **k):
        raise AssertionError("searched again")

    monkeypatch.setattr(keypoint_pairs, "_search_finer", never)
    creature = prepare_mesh(small_pair.source_vertices, small_pair.source_faces, "creature").mesh
    copy = WorkingCopy(creature, creature.n_vertices // 2).mesh
    pk = detect_pair(copy, prepare_mesh(*humanoid(), "figure").mesh, "auto", cache_dir=str(tmp_path),
                     finer=(creature, None))
    assert not pk.used and pk.detected_on == (0, 0) and "creature" in pk.reason


def _fake_keypoints(points: np.ndarray, vertices: np.ndarray) -> Keypoints:
    kp = not_found()
    kp.points[:], kp.vertices[:], kp.confidence[:] = points, vertices, 0.9
    kp.humanoid = True
    return kp


def test_verdict_good_for_a_right_map_and_wrong_for_a_mirrored_or_upside_down_one():
    from engine.keypoints.pose_model import ALL_NAMES

    rng = np.random.default_rng(1)
    k = len(ALL_NAMES)
    # a symmetric "body" (fingers included): a keypoint at x and its twin at -x
    pts = rng.normal(size=(k, 3))
    for i, n in enumerate(ALL_NAMES):
        twin = ALL_NAMES.index(mirror_name(n))
        if n.startswith("right_"):
            pts[i] = pts[twin] * [-1, 1, 1]
        elif twin == i:
            pts[i, 0] = 0.0
    verts = pts.copy()
    kp = _fake_keypoints(pts, np.arange(k))
    from engine.correspond.keypoint_pairs import PairKeypoints

    pk = PairKeypoints(kp, kp)
    assert keypoint_verdict(pk, verts + 0.01, verts)["verdict"] == "good"
    mirrored = verts * [-1, 1, 1]
    v = keypoint_verdict(pk, mirrored, verts)
    assert v["verdict"] == "wrong" and "left and right" in v["reason"]
    upside = verts * [1, -1, 1]
    assert keypoint_verdict(pk, upside, verts)["verdict"] == "wrong"


def test_verdict_checks_a_hand_landed_on_the_head_that_the_median_and_worst_rules_pass():
    """A map that puts one wrist on the nose: the median is tiny and the wrist's error (0.2) under
    the "another body part altogether" bound (0.25), so only the part rule sees it."""
    from engine.correspond.keypoint_pairs import VERDICT_FAR, VERDICT_OFF, PairKeypoints
    from engine.keypoints.pose_model import ALL_NAMES

    rng = np.random.default_rng(2)
    k = len(ALL_NAMES)
    pts = rng.normal(size=(k, 3))
    wrist, nose = ALL_NAMES.index("left_wrist"), ALL_NAMES.index("nose")
    pts *= 0.2 / np.linalg.norm(pts[wrist] - pts[nose])  # the wrist 0.2 from the nose
    pk = PairKeypoints(_fake_keypoints(pts, np.arange(k)), _fake_keypoints(pts, np.arange(k)))
    mapped = pts + 0.005
    assert keypoint_verdict(pk, mapped, pts)["verdict"] == "good"
    mapped[wrist] = pts[nose] + 0.01
    err = float(np.linalg.norm(mapped[wrist] - pts[wrist]))
    assert VERDICT_OFF < err < VERDICT_FAR
    v = keypoint_verdict(pk, mapped, pts)
    assert v["verdict"] == "check" and "left_wrist on the head" in v["reason"], v


def test_keypoint_guidance_pulls_joint_regions_together_and_is_released():
    v, f = humanoid()
    mesh = prepare_mesh(v, f, "figure").mesh
    joints = mesh.vertices[[10, 500, 1500]] * 0.98
    verts = np.array([10, 500, 1500])
    regions = joint_regions(mesh, joints, verts)
    assert np.allclose(np.asarray(regions.sum(1)).ravel(), 1.0)
    target = regions @ mesh.vertices + 0.01
    g = KeypointGuidance(regions, target, np.ones(3), release=(0.5, 0.8))
    x = torch.tensor(mesh.vertices, requires_grad=True)
    g.update(mesh.vertices, 0, 0.0)
    loss = g.loss(x)
    assert abs(float(loss.detach()) - 3 * 0.01**2) < 1e-9
    loss.backward()
    # the gradient against a finite difference along a random direction
    d = torch.tensor(np.random.default_rng(0).normal(size=mesh.vertices.shape))
    eps = 1e-6
    fd = (float(g.loss(x.detach() + eps * d)) - float(g.loss(x.detach() - eps * d))) / (2 * eps)
    assert abs(fd - float((x.grad * d).sum())) < 1e-6
    g.update(mesh.vertices, 0, 0.65)
    assert abs(g.strength - 0.5) < 1e-9
    g.update(mesh.vertices, 0, 0.9)
    assert float(g.loss(x).detach()) == 0.0


@needs_mediapipe
def test_landmarks_command_writes_json_in_file_indices(tmp_path):
    from engine.cli import main
    from tests.conftest import write_obj

    v, f = humanoid(left_arm_raise_deg=60.0)
    path = write_obj(tmp_path / "figure.obj", v * 10.0 + 3.0, f)  # other units and origin than the engine's frame
    out = tmp_path / "lm.json"
    assert main(["landmarks", path, "-o", str(out), "--png", str(tmp_path / "lm.png")]) == 0
    data = json.loads(out.read_text())
    assert data["humanoid"] and (tmp_path / "lm.png").stat().st_size > 0
    rows = {r["name"]: r for r in data["landmarks"]}
    wrist = rows["left_wrist"]
    assert np.linalg.norm(np.asarray(wrist["point"]) - (v[wrist["vertex"]] * 10.0 + 3.0)) < 1.5
    assert wrist["point"][1] > 3.0 + 10.0  # raised: above 1 m, in file units
    assert main(["landmarks", str(tmp_path / "missing.obj"), "-o", str(out)]) != 0


@needs_mediapipe
def test_match_with_keypoints_orients_an_upside_down_figure_and_says_so(tmp_path, monkeypatch):
    import engine

    monkeypatch.setenv("STABLEWRAP_CACHE", str(tmp_path))
    vs, fs = humanoid()
    vt, ft = humanoid(left_arm_raise_deg=30.0, right_knee_bend_deg=20.0)  # same topology: vertex i is the truth
    rot = Rotation.from_euler("zy", [180, 40], degrees=True)
    vt = rot.apply(vt) * 30.0 + 5.0
    r = engine.match((vs, fs), (vt, ft), quality="fast", features="geometric", keypoints="on")
    kp = r.meta["keypoints"]
    assert kp["used"] and len(kp["pairs"]) >= 15 and r.meta["rigid"]["kind"] == "landmarks"
    assert r.meta["alignment_fits"] == 1 and r.meta["guidance"].endswith("+keypoints")
    assert r.meta["verdict"]["verdict"] == "good", r.meta["verdict"]
    err = np.linalg.norm(r.fitted_vertices - vt, axis=1) / 30.0  # metres on the 1.75 m figure
    assert np.median(err) < 0.03
    with pytest.raises(InputError, match="keypoints: unknown mode 'yes'"):
        engine.match((vs, fs), (vt, ft), keypoints="yes")


@needs_mediapipe
def test_match_finds_the_body_on_the_whole_mesh_when_its_working_copy_hides_it(tmp_path, monkeypatch):
    """A match whose source's working copy is too coarse to show the body ("on" failed on it) finds
    it on the whole source and is guided by it."""
    import engine

    monkeypatch.setenv("STABLEWRAP_CACHE", str(tmp_path))
    vs, fs = humanoid()
    vt, ft = humanoid(left_arm_raise_deg=30.0)
    r = engine.match((vs, fs), (vt, ft), quality="fast", features="geometric", keypoints="on",
                     config={"working_vertices": 250})
    kp = r.meta["keypoints"]
    assert r.meta["working_vertices"][0] < 400
    assert kp["used"] and kp["source"]["found_on_vertices"] > 3000 and kp["target"]["humanoid"]
    assert r.meta["verdict"]["verdict"] == "good", r.meta["verdict"]


DATA = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data"


@needs_mediapipe
@pytest.mark.skipif(not (DATA / "realworld" / "mh_body.obj").is_file(), reason="benchmark data not available")
def test_hand_model_finds_the_fingers_of_the_makehuman_template_on_the_right_sides(tmp_path):
    from engine.mesh import load_mesh

    mesh = load_mesh(DATA / "realworld" / "mh_body.obj").mesh
    kp = detect_keypoints(mesh.vertices, mesh.faces, settings=KeypointSettings(hands=True), cache_dir=str(tmp_path))
    assert kp.humanoid
    for side, sign in (("left", 1), ("right", -1)):
        tip, wrist = kp.point(f"{side}_index_tip"), kp.point(f"{side}_wrist")
        assert tip is not None and wrist is not None
        assert sign * tip[0] > 0  # the template faces +Z: its left hand is at +X
        assert np.linalg.norm(tip - wrist) < 0.15  # a fingertip near its own wrist (unit-area frame)
        assert kp.model_of(f"{side}_index_tip") == "mediapipe-hands"
    assert kp.found(0.3).sum() >= len(BODY_NAMES) + 12


def test_no_keypoint_back_end_is_a_backend_error_with_on_and_a_notice_with_auto(monkeypatch):
    """Neither the mediapipe package nor the runner's LiteRT: "on" fails in one line naming the
    package to install, "auto" goes on geometrically and says why."""
    import engine.keypoints.litert_models as lm
    import engine.keypoints.pose_model as pm
    from engine.errors import BackendUnavailable

    monkeypatch.delenv(pm.BACKEND_ENV, raising=False)
    monkeypatch.setattr(pm, "mediapipe_status", lambda: (False, "the mediapipe package is not installed (pip install ...)"))
    monkeypatch.setattr(lm, "litert_status", lambda: (False, "the ai-edge-litert package is not installed (pip install ...)"))
    assert pm.keypoint_backend() == "litert"  # auto without mediapipe: the runner
    mesh = Mesh(*humanoid())
    with pytest.raises(BackendUnavailable, match="keypoints: the ai-edge-litert package is not installed"):
        detect_pair(mesh, mesh, "on")
    pk = detect_pair(mesh, mesh, "auto")
    assert not pk.used and "ai-edge-litert package is not installed" in pk.reason and "geometric" in pk.reason


def test_a_pose_model_that_fails_while_detecting_is_an_error_with_on_and_a_notice_with_auto(tmp_path):
    """A model that breaks mid-way (its process ended): "on" fails in one line, "auto" goes on
    without keypoints and still runs what the caller wanted done meanwhile."""
    from engine.errors import BackendUnavailable

    class Dying:
        name, names = "dying", BODY_NAMES

        def detect(self, images):
            raise BackendUnavailable("keypoints: the pose model's process ended (exit code -9)")

    mesh = Mesh(*humanoid())
    with pytest.raises(BackendUnavailable, match=r"^keypoints: the pose model's process ended \(exit code -9\)$"):
        detect_pair(mesh, mesh, "on", model=Dying(), cache_dir=str(tmp_path))
    ran = []
    pk = detect_pair(mesh, mesh, "auto", model=Dying(), cache_dir=str(tmp_path), meanwhile=lambda: ran.append(1))
    assert not pk.used and pk.reason == "keypoints: the pose model's process ended (exit code -9); using geometric orientation"
    assert ran == [1]


@needs_mediapipe
def test_loading_the_pose_model_leaves_pyplot_unloaded_until_something_uses_it():
    # mediapipe's drawing helpers import matplotlib.pyplot (a quarter second per process) and the
    # pose graphs never draw: the model loads without it, and pyplot still works when asked for
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from engine.keypoints.pose_model import _import_solutions\n"
        "solutions = _import_solutions()\n"
        "assert solutions.pose.Pose is not None\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot loaded with mediapipe'\n"
        "from mediapipe.python.solutions import drawing_utils\n"
        "assert callable(drawing_utils.plt.figure)\n"
        "import matplotlib.pyplot as plt\n"
        "assert drawing_utils.plt.figure is plt.figure and type(plt).__name__ == 'module'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@needs_mediapipe
@pytest.mark.skipif(not (DATA / "realworld" / "mh_base_full.obj").is_file(), reason="benchmark data not available")
def test_makehuman_base_mesh_with_its_helper_geometry_shows_its_body_on_the_whole_mesh(tmp_path):
    """MakeHuman's base mesh as shipped (helper geometry round the body, joint cubes inside): its
    3000-vertex working copy blurs the ankles into the helpers and shows no body; the whole mesh does."""
    from engine.correspond.keypoint_pairs import FINER_VERTICES
    from engine.geometry.working_copy import WorkingCopy
    from engine.mesh import load_mesh

    full = load_mesh(DATA / "realworld" / "mh_base_full.obj").mesh
    assert full.n_vertices <= FINER_VERTICES  # searched again as it is
    copy = WorkingCopy(full, 3000).mesh
    assert not detect_keypoints(copy.vertices, copy.faces, cache_dir=str(tmp_path)).humanoid
    pk = detect_pair(copy, copy, "on", cache_dir=str(tmp_path), finer=(full, full))
    assert pk.used and pk.meta()["source"]["found_on_vertices"] == full.n_vertices
    up = pk.source.frame()[1]
    assert pk.source.point("nose") @ up > pk.source.point("left_hip") @ up > pk.source.point("right_knee") @ up


@needs_mediapipe
@pytest.mark.skipif(not (DATA / "realworld" / "xbot.obj").is_file(), reason="benchmark data not available")
def test_a_t_pose_as_wide_as_tall_is_orbited_round_its_up_when_its_arm_span_comes_first(tmp_path):
    """X Bot's T-pose, Z-up, turned so that its arms lie along Y: Y and Z are as long, so Y (the
    arm span) is orbited first; that orbit sees the torso in most views but blurs the knees (no
    body), so Z, as long, is tried too and shows the body standing up along Z."""
    import trimesh

    from engine.geometry.working_copy import WorkingCopy
    from engine.mesh import load_mesh

    m = trimesh.load(DATA / "realworld" / "xbot.obj", process=False, force="mesh")
    turned = Rotation.from_euler("z", 90, degrees=True).apply(np.asarray(m.vertices)) * 100.0
    mesh = WorkingCopy(prepare_mesh(turned, np.asarray(m.faces), "xbot").mesh, 3000).mesh
    ext = np.ptp(mesh.vertices, axis=0)
    assert abs(ext[1] - ext[2]) < 0.1 * ext.max() and ext[0] < 0.5 * ext.max()
    one = detect_keypoints(mesh.vertices, mesh.faces, settings=KeypointSettings(axes=("y",)), cache_dir=str(tmp_path))
    assert not one.humanoid and one.views_found >= 6  # the arm-span orbit alone
    kp = detect_keypoints(mesh.vertices, mesh.faces, cache_dir=str(tmp_path))
    assert kp.humanoid and kp.axis == "z"
    assert kp.frame()[1] @ np.array([0.0, 0.0, 1.0]) > 0.95
