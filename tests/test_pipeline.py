"""engine.match on a small generated pair: the result contract, progress, cancellation, option validation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import engine
from engine.errors import Cancelled, InputError
from engine.geometry.closest import SurfaceQuery
from engine.progress import CancelToken

FAST = dict(quality="fast", features="geometric")


@pytest.fixture(scope="module")
def matched(small_pair):
    calls = []
    result = engine.match((small_pair.source_vertices, small_pair.source_faces),
                          (small_pair.target_vertices, small_pair.target_faces),
                          progress=lambda stage, f: calls.append((stage, f)), **FAST)
    return result, calls


def _src_tgt(pair):
    return (pair.source_vertices, pair.source_faces), (pair.target_vertices, pair.target_faces)


def test_result_keys_shapes_dtypes_ranges(matched, small_pair):
    r, _ = matched
    ns, nt = len(small_pair.source_vertices), len(small_pair.target_vertices)
    arrays = r.arrays()
    assert set(arrays) == set(engine.correspondence.NPZ_KEYS)
    assert r.src_to_tgt_face.shape == (ns,) and r.src_to_tgt_face.dtype == np.int32
    assert r.src_to_tgt_bary.shape == (ns, 3) and r.src_to_tgt_bary.dtype == np.float32
    assert r.tgt_to_src_face.shape == (nt,) and r.tgt_to_src_face.dtype == np.int32
    assert r.tgt_to_src_bary.shape == (nt, 3) and r.tgt_to_src_bary.dtype == np.float32
    assert r.fitted_vertices.shape == (ns, 3) and r.fitted_vertices.dtype == np.float32
    assert r.confidence.shape == (ns,) and r.confidence.dtype == np.float32
    assert 0 <= r.src_to_tgt_face.min() and r.src_to_tgt_face.max() < len(small_pair.target_faces)
    assert 0 <= r.tgt_to_src_face.min() and r.tgt_to_src_face.max() < len(small_pair.source_faces)
    for b in (r.src_to_tgt_bary, r.tgt_to_src_bary):
        assert b.min() >= 0 and b.max() <= 1
        np.testing.assert_allclose(b.sum(1), 1, atol=1e-4)
    assert np.all(np.isfinite(r.fitted_vertices)) and 0 <= r.confidence.min() <= r.confidence.max() <= 1
    assert r.meta["features"] == "geometric" and r.meta["method"] == "full"
    assert set(r.meta["seconds"]) >= {"prepare", "align", "register", "project"}


def test_fitted_vertices_lie_on_the_target_where_supported_and_match_the_face_map(matched, small_pair):
    """The fitted source lies on the target wherever the target carries it (confidence above a
    half: a released vertex has at most half), and the face map names that point; it flips no
    more triangles than projecting every vertex would."""
    from engine.geometry.mesh_quality import OrientationCheck

    r, _ = matched
    tv, tf = small_pair.target_vertices, small_pair.target_faces
    diag = np.linalg.norm(tv.max(0) - tv.min(0))
    _, _, proj, dist = SurfaceQuery(tv, tf).closest(r.fitted_vertices)
    on = r.confidence > 0.5
    assert on.mean() > 0.8
    assert dist[on].max() < 1e-4 * diag
    np.testing.assert_allclose(r.src_points_on_target(tv, tf)[on], r.fitted_vertices[on], atol=1e-4 * diag)
    check = OrientationCheck(small_pair.source_vertices, small_pair.source_faces)
    assert check.flipped(r.fitted_vertices.astype(np.float64)).sum() <= r.meta["surface_fit"]["flipped"]
    assert r.meta["surface_fit"]["flipped"] <= check.flipped(proj).sum()


def test_a_large_source_is_fitted_decimated_then_settled_at_full_size(small_pair, monkeypatch):
    """Above ``surface_fit_vertices`` the fit runs on a decimated copy first; the full source then
    carries it with its own detail and settles: still on the target, no more flips than the
    projection, as close to the ground truth."""
    from engine.geometry.mesh_quality import OrientationCheck

    from engine import full_fit

    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return decimated_fit(*args, **kwargs)

    decimated_fit = full_fit.fit_decimated_surface
    monkeypatch.setattr(full_fit, "fit_decimated_surface", spy)
    n = len(small_pair.source_vertices)
    r = engine.match(*_src_tgt(small_pair), config={"surface_fit_vertices": n // 4}, **FAST)
    assert calls == [1]  # the decimated fit ran
    tv, tf = small_pair.target_vertices, small_pair.target_faces
    diag = np.linalg.norm(tv.max(0) - tv.min(0))
    _, _, proj, dist = SurfaceQuery(tv, tf).closest(r.fitted_vertices)
    on = r.confidence > 0.5
    assert on.mean() > 0.8 and dist[on].max() < 1e-4 * diag
    check = OrientationCheck(small_pair.source_vertices, small_pair.source_faces)
    assert r.meta["surface_fit"]["flipped"] <= max(1, check.flipped(proj).sum() // 4)
    err = np.linalg.norm(r.fitted_vertices - small_pair.gt_src_to_tgt, axis=1) / diag
    assert np.median(err) < 0.08, np.median(err)


def test_match_is_close_to_the_ground_truth(matched, small_pair):
    """The re-posed, remeshed, rotated creature: no flip, most vertices near their true point."""
    r, _ = matched
    tv = small_pair.target_vertices
    diag = np.linalg.norm(tv.max(0) - tv.min(0))
    err = np.linalg.norm(r.fitted_vertices - small_pair.gt_src_to_tgt, axis=1) / diag
    assert np.median(err) < 0.08, np.median(err)


def test_progress_fractions_increase_to_one(matched):
    _, calls = matched
    fractions = [f for _, f in calls]
    assert len(calls) > 5
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:]))
    assert fractions[-1] == pytest.approx(1.0)
    stages = [s for s, _ in calls]
    assert stages[0] == "prepare" and "register" in stages and stages[-1] == "fit surface"


def test_cancel_with_a_token(small_pair):
    token = CancelToken()
    seen = []

    def progress(stage, fraction):
        seen.append(stage)
        if stage == "align":  # another thread could do the same: token.cancel()
            token.cancel()

    with pytest.raises(Cancelled):
        engine.match(*_src_tgt(small_pair), progress=progress, cancel=token, **FAST)
    assert "register" not in seen
    pre = CancelToken()
    pre.cancel()
    with pytest.raises(Cancelled):
        engine.match(*_src_tgt(small_pair), cancel=pre, **FAST)


def test_cancel_by_callback_returning_false(small_pair):
    seen = []

    def progress(stage, fraction):
        seen.append(stage)
        return stage != "align"

    with pytest.raises(Cancelled):
        engine.match(*_src_tgt(small_pair), progress=progress, **FAST)
    assert seen[-1] == "align"


def test_cancel_during_the_registration_race_stops_every_run(small_pair):
    """The raced runs advance in worker threads; a cancel from the progress callback stops
    them all, raises Cancelled in the caller and leaves no thread behind."""
    import threading

    before = threading.active_count()
    seen = []

    def progress(stage, fraction):
        seen.append((stage, fraction))
        started = [f for s, f in seen if s == "register"]
        return not (len(started) > 1 and fraction > started[0])  # once the runs have made steps

    with pytest.raises(Cancelled):
        engine.match(*_src_tgt(small_pair), progress=progress, config={"alignment_retries": 0}, **FAST)
    register = [f for s, f in seen if s == "register"]
    assert seen[-1][0] == "register" and register[-1] > register[0]
    assert threading.active_count() == before


def test_the_spectra_are_computed_while_the_pose_model_works_and_their_error_is_the_matchs(small_pair, monkeypatch,
                                                                                           tmp_path):
    """With keypoints detected, the working copies' bases and descriptors are computed in the
    keypoint stage, in the match's thread, while the pose model's detections are in flight on its
    helper; what that raises is the match's error and no thread stays. With keypoints off they are
    computed in the align stage as before."""
    import threading

    from engine.errors import InputError
    from engine.keypoints.pose_model import MediaPipePose
    from engine.pair_context import MeshContext

    before = threading.active_count()
    stage, where, overlapped = [None], [], []
    spectra_started = threading.Event()
    detect = MediaPipePose.detect

    def waiting_detect(self, images):  # a detection waits (up to 10 s) for the spectra to start
        overlapped.append(spectra_started.wait(timeout=10.0))
        return detect(self, images)

    def no_spectrum(self):
        spectra_started.set()
        where.append((threading.current_thread().name, stage[0]))
        raise InputError(f"{self.mesh.name}: no spectrum")

    def progress(name, fraction):
        stage[0] = name

    monkeypatch.setenv("STABLEWRAP_CACHE", str(tmp_path / "features"))  # no cached keypoints: detected
    monkeypatch.setattr(MediaPipePose, "detect", waiting_detect)
    monkeypatch.setattr(MeshContext, "hks", property(no_spectrum))
    with pytest.raises(InputError, match="no spectrum"):
        engine.match(*_src_tgt(small_pair), keypoints="auto", progress=progress, **FAST)
    assert where == [(threading.main_thread().name, "keypoints")] and overlapped and all(overlapped)
    assert threading.active_count() == before
    with pytest.raises(InputError, match="no spectrum"):
        engine.match(*_src_tgt(small_pair), keypoints="off", progress=progress, **FAST)
    assert where[1:] == [(threading.main_thread().name, "align")]


def test_a_match_leaves_the_thread_pools_as_it_found_them(small_pair):
    """The keypoint stage's helper thread and the single-thread stages restore torch's count and
    the BLAS limit (a helper restoring the process-wide BLAS limit itself could leave it at 1)."""
    import torch
    from threadpoolctl import threadpool_info

    def pools():
        return torch.get_num_threads(), [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = pools()
    engine.match(*_src_tgt(small_pair), keypoints="auto", **FAST)
    assert pools() == before


def test_a_cancel_from_the_progress_callback_stops_runs_racing_in_threads():
    import threading

    from engine.register.race import StepProgress, advance_together
    from engine.progress import Progress

    class Run:
        def __init__(self):
            self.step = 0

        def advance(self, until, progress):
            while self.step < until:
                progress.token.raise_if_cancelled()
                self.step += 1
                threading.Event().wait(0.001)

    runs = [Run(), Run(), Run()]
    prog = Progress(lambda s, f: f < 0.01, stages=[("register", 1.0)])
    prog.stage("register")
    with pytest.raises(Cancelled):
        advance_together(runs, 10_000, 0, StepProgress(prog, 30_000, 10_000))
    assert all(0 < r.step < 10_000 for r in runs)


def test_a_failing_run_of_a_race_stops_its_siblings_and_its_error_reaches_the_caller():
    import threading

    from engine.register.race import StepProgress, advance_together
    from engine.progress import Progress

    class Run:
        def __init__(self, fail_at=None):
            self.step, self.fail_at = 0, fail_at

        def advance(self, until, progress):
            while self.step < until:
                if self.step == self.fail_at:
                    raise RuntimeError("registration produced non-finite vertices")
                progress.token.raise_if_cancelled()
                self.step += 1
                threading.Event().wait(0.001)

    runs = [Run(), Run(fail_at=5), Run()]
    with pytest.raises(RuntimeError, match="non-finite"):
        advance_together(runs, 10_000, 0, StepProgress(Progress(), 30_000, 10_000))
    assert runs[1].step == 5
    assert all(r.step < 10_000 for r in runs)  # the siblings were stopped, not run to the end
    ok = [Run(), Run()]
    fractions = []
    prog = Progress(lambda s, f: fractions.append(f), stages=[("register", 1.0)])
    prog.stage("register")
    advance_together(ok, 50, 0, StepProgress(prog, 100, 50))
    assert [r.step for r in ok] == [50, 50]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(landmarks=[[0, 1, 2]]), "landmarks"),
    (dict(landmarks=[[0, 10**6]]), "out of range"),
    (dict(landmarks=[[-1, 0]]), "out of range"),
    (dict(landmarks=[[0.5, 1]]), "integer"),
    (dict(exclude=[10**6]), "out of range"),
    (dict(exclude=np.zeros(5, bool)), "one entry per source vertex"),
    (dict(exclude="/no/such/exclude.txt"), "not found"),
    (dict(landmarks="/no/such/landmarks.txt"), "not found"),
    (dict(quality="ultra"), "quality"),
    (dict(method="magic"), "method"),
    (dict(features="clip"), "features"),
    (dict(device="tpu"), "device"),
    (dict(config={"no_such": 1}), "unknown setting"),
    (dict(config={"guidance_schedule": "sideways"}), "guidance_schedule"),
])
def test_option_validation_errors(small_pair, kwargs, needle):
    opts = dict(FAST)
    opts.update(kwargs)
    with pytest.raises(InputError) as exc:
        engine.match(*_src_tgt(small_pair), **opts)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_exclude_covering_everything_is_an_error(small_pair):
    everything = np.ones(len(small_pair.source_vertices), bool)
    with pytest.raises(InputError, match="whole source"):
        engine.match(*_src_tgt(small_pair), exclude=everything, **FAST)


def test_landmark_and_exclude_files_are_parsed(tmp_path):
    from engine.pipeline import read_exclude_file, read_landmarks_file

    lm = tmp_path / "lm.txt"
    lm.write_text("# nose\n3 7\n\n10, 20  # hand\n")
    np.testing.assert_array_equal(read_landmarks_file(str(lm)), [[3, 7], [10, 20]])
    np.save(tmp_path / "lm.npy", np.array([[1, 2]]))
    np.testing.assert_array_equal(read_landmarks_file(str(tmp_path / "lm.npy")), [[1, 2]])
    ex = tmp_path / "ex.txt"
    ex.write_text("1 2, 3\n# comment\n4\n")
    np.testing.assert_array_equal(read_exclude_file(str(ex)), [1, 2, 3, 4])


@pytest.mark.xfail(strict=False, reason="known: the orientation search can pick a head/tail flip when the "
                   "re-posed target is turned by 120 degrees (engine/geometry/align.py)")
def test_rotated_reposed_target_keeps_orientation(small_pair):
    R = Rotation.from_euler("z", 120, degrees=True).as_matrix()
    tv = small_pair.target_vertices @ R.T
    r = engine.match((small_pair.source_vertices, small_pair.source_faces), (tv, small_pair.target_faces),
                     method="rigid", quality="fast")
    diag = np.linalg.norm(tv.max(0) - tv.min(0))
    err = np.linalg.norm(r.fitted_vertices - small_pair.gt_src_to_tgt @ R.T, axis=1) / diag
    assert np.median(err) < 0.08


def test_part_guidance_is_on_by_default_and_can_be_switched_off(small_pair):
    src, tgt = _src_tgt(small_pair)
    on = engine.match(src, tgt, quality="fast", features="geometric", config={"reg_steps": 20})
    # both schedules race with the part pairs, and feature-led without (wrong part pairs turn a fit round)
    assert sorted(on.meta["schedule_scores"]) == ["feature-led", "feature-led+parts", "position-led+parts"]
    assert on.meta["guidance"] in on.meta["schedule_scores"]
    assert np.isfinite(on.fitted_vertices).all()
    off = engine.match(src, tgt, quality="fast", features="geometric", config={"w_parts": 0.0, "reg_steps": 20})
    assert sorted(off.meta["schedule_scores"]) == ["feature-led", "position-led"]
    forced = engine.match(src, tgt, quality="fast", features="geometric",
                          config={"guidance_schedule": "feature-led", "reg_steps": 20})
    assert forced.meta["guidance"] == "feature-led+parts" and forced.meta["schedule_scores"] is None


def test_a_suspect_fit_is_redone_from_the_next_alignment_and_the_better_fit_kept(small_pair):
    src, tgt = _src_tgt(small_pair)
    once = engine.match(src, tgt, config={"retry_score": 1e9}, **FAST)
    assert once.meta["alignment_fits"] == 1 and once.meta["alignment_used"] == 1
    always = {"retry_score": 0.0, "retry_alignment_ratio": 1e9}  # every fit is suspect, every alignment close
    twice = engine.match(src, tgt, config=always, **FAST)
    assert twice.meta["alignment_fits"] == 2
    # the first fit (right alignment) scores better than the one from a turned-round alignment
    assert twice.meta["alignment_used"] == 1
    assert twice.meta["fit_score"] == pytest.approx(once.meta["fit_score"])
    np.testing.assert_allclose(twice.fitted_vertices, once.fitted_vertices)
    none = engine.match(src, tgt, config={**always, "alignment_retries": 0}, **FAST)
    assert none.meta["alignment_fits"] == 1
    # an alignment that scored clearly worse than the chosen one is not worth a second fit
    clear = engine.match(src, tgt, config={**always, "retry_alignment_ratio": 0.0}, **FAST)
    assert clear.meta["alignment_fits"] == 1


def test_the_schedule_race_finishes_the_better_schedule_as_a_lone_run_would(small_pair):
    """Both guidance schedules are started; the one scoring better after the probe is finished,
    and the split run gives exactly what a run of that schedule alone gives."""
    src, tgt = _src_tgt(small_pair)
    no_retry = {"alignment_retries": 0, "w_parts": 0.0}
    raced = engine.match(src, tgt, config=no_retry, **FAST)
    scores = raced.meta["schedule_scores"]
    assert set(scores) == {"feature-led", "position-led"}
    winner = min(scores, key=scores.get)
    assert raced.meta["guidance"] == winner
    alone = engine.match(src, tgt, config={**no_retry, "guidance_schedule": winner}, **FAST)
    assert alone.meta["schedule_scores"] is None and alone.meta["guidance"] == winner
    np.testing.assert_allclose(raced.fitted_vertices, alone.fitted_vertices, atol=1e-5)
    # three runs (with and without part pairs): all go to half the probe, the better two to the
    # probe, and the winner still equals a lone run of its schedule
    three = engine.match(src, tgt, config={"alignment_retries": 0}, **FAST)
    scores3 = three.meta["schedule_scores"]
    assert len(scores3) == 3 and three.meta["guidance"] in scores3
    name = three.meta["guidance"]
    lone = {"alignment_retries": 0, "guidance_schedule": name.removesuffix("+parts")}
    if not name.endswith("+parts"):
        lone["w_parts"] = 0.0
    alone3 = engine.match(src, tgt, config=lone, **FAST)
    assert alone3.meta["guidance"] == name
    np.testing.assert_allclose(three.fitted_vertices, alone3.fitted_vertices, atol=1e-5)
    # the raced runs advance side by side in threads; one after the other gives the same race
    in_turn = engine.match(src, tgt, config={"alignment_retries": 0, "race_in_threads": False}, **FAST)
    assert in_turn.meta["schedule_scores"] == scores3
    np.testing.assert_array_equal(in_turn.fitted_vertices, three.fitted_vertices)
    # no probe: the first (feature-led) schedule runs alone
    first = engine.match(src, tgt, config={**no_retry, "schedule_probe": 0.0}, **FAST)
    assert first.meta["guidance"] == "feature-led" and first.meta["schedule_scores"] is None


def _median_error(r, pair, R=None):
    tv = pair.target_vertices if R is None else pair.target_vertices @ R.T
    gt = pair.gt_src_to_tgt if R is None else pair.gt_src_to_tgt @ R.T
    diag = np.linalg.norm(tv.max(0) - tv.min(0))
    return float(np.median(np.linalg.norm(r.fitted_vertices - gt, axis=1) / diag))


def test_three_or_more_landmarks_decide_the_alignment(small_pair):
    """Where the orientation search flips the turned target (the xfail above), landmark pairs through
    engine.match give the landmark (Umeyama) alignment and the right fit."""
    R = Rotation.from_euler("z", 120, degrees=True).as_matrix()
    tv = small_pair.target_vertices @ R.T
    gt = small_pair.gt_src_to_tgt @ R.T
    src_ids = np.array([0, 40, 120, 300, 500, 600])
    tgt_ids = np.array([int(np.argmin(np.linalg.norm(tv - gt[i], axis=1))) for i in src_ids])
    r = engine.match((small_pair.source_vertices, small_pair.source_faces), (tv, small_pair.target_faces),
                     landmarks=np.stack([src_ids, tgt_ids], axis=1), **FAST)
    assert r.meta["rigid"]["kind"] == "landmarks"
    assert _median_error(r, small_pair, R) < 0.08


def test_excluded_vertices_have_low_confidence_and_progress_never_goes_back_on_a_retry(small_pair):
    src, tgt = _src_tgt(small_pair)
    excluded = np.nonzero(small_pair.source_vertices[:, 0] > np.percentile(small_pair.source_vertices[:, 0], 85))[0]
    fractions = []
    r = engine.match(src, tgt, exclude=excluded, progress=lambda s, f: fractions.append(f),
                     config={"retry_score": 0.0, "retry_alignment_ratio": 1e9}, **FAST)
    assert r.meta["alignment_fits"] == 2  # the fit was redone: the stages ran twice
    assert all(b >= a for a, b in zip(fractions, fractions[1:])) and fractions[-1] == pytest.approx(1.0)
    assert r.confidence[excluded].max() <= 0.5 + 1e-6


def test_race_halves_the_field_and_finishes_the_best_candidate_with_fake_runs():
    """Successive halving over typed candidates, scored by the given energy; no real registration."""
    from engine.progress import Progress
    from engine.register.race import Candidate, race, race_stages

    class Run:
        def __init__(self, quality):
            self.step, self.quality, self.calls = 0, quality, []

        def advance(self, until, progress):
            self.calls.append((self.step, until))
            self.step = until
            if progress is not None:
                progress.update(until / 100.0)  # a Registration reports step / its steps

        def vertices(self):
            return np.full((1, 3), self.quality)  # the "score" reads it back

    assert race_stages(3, 100, 0.3) == (30, [(0, 15, 3), (15, 30, 2)])
    assert race_stages(2, 100, 0.3) == (30, [(0, 30, 2)])
    assert race_stages(1, 100, 0.3) == (0, [])
    runs = [Run(0.5), Run(0.2), Run(0.9)]
    cands = [Candidate(r, name) for r, name in zip(runs, ("a", "b", "c"))]
    fractions = []
    prog = Progress(lambda s, f: fractions.append(f), stages=[("register", 1.0)])
    prog.stage("register")
    winner = race(cands, 100, 0.3, lambda v: float(v[0, 0]), prog, in_threads=False)
    assert winner.name == "b" and runs[1].step == 100
    assert runs[2].step == 15  # the worst left the race after half the probe
    assert runs[0].step == 30  # the runner-up stopped at the probe
    assert [c.score for c in cands] == [0.5, 0.2, 0.9]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    alone = race([Candidate(Run(0.7), "only")], 50, 0.3, lambda v: 0.0, Progress(), in_threads=False)
    assert alone.name == "only" and alone.run.step == 50 and alone.score is None


@pytest.mark.skipif(not __import__("engine.keypoints.pose_model", fromlist=["x"]).keypoints_status()[0],
                    reason="no keypoint back end installed")
def test_the_match_follows_a_reposed_limb_where_rigid_alignment_cannot():
    """The generated figure onto itself with the left arm raised 100 degrees and the right knee
    bent 70, decimated to 60 % and turned: rigid alignment + closest point leaves the moved limbs
    at their old place (ground truth: the re-posed vertices); the full match must bring them over,
    at a third of the rigid error, and beat it overall on the worst tenth of the points."""
    import fast_simplification
    from scipy.spatial.transform import Rotation

    from engine.samples import humanoid

    sv, sf = humanoid()
    tv0, tf0 = humanoid(left_arm_raise_deg=100.0, right_knee_bend_deg=70.0)
    tv, tf = fast_simplification.simplify(tv0.astype(np.float32), tf0.astype(np.int32), target_reduction=0.4)
    turn = Rotation.from_euler("xyz", [20, 130, 10], degrees=True).as_matrix()
    target, truth = tv @ turn.T, tv0 @ turn.T
    diag = np.linalg.norm(target.max(0) - target.min(0))
    moved = np.linalg.norm(tv0 - sv, axis=1) > 0.1 * np.linalg.norm(sv.max(0) - sv.min(0))
    errors = {}
    for method in ("rigid", "full"):
        corr = engine.match((sv, sf), (target, tf), method=method)
        errors[method] = np.linalg.norm(corr.fitted_vertices - truth, axis=1) / diag
    assert moved.sum() > 300
    assert errors["rigid"][moved].mean() > 0.2  # the fixture is one rigid alignment cannot solve
    assert errors["full"][moved].mean() < errors["rigid"][moved].mean() / 3
    assert np.quantile(errors["full"], 0.9) < 0.6 * np.quantile(errors["rigid"], 0.9)
    # the fit's coverage both ways (engine.geometry.coverage) is reported, and where it falls short
    # by body region when the keypoints guided the match (here the raised arm's shoulder and the
    # bent knee: 6 % of the target uncovered, 26 % with the fit's cover pull off)
    fit = corr.meta["surface_fit"]
    assert 0.0 <= fit["target_uncovered_pct"] <= 100.0 and 0.0 <= fit["fit_off_target_pct"] <= 100.0
    if corr.meta["keypoints"]["used"]:
        where = fit["uncovered_where"]
        assert isinstance(where, dict) and all(v >= 0.5 for v in where.values())
        assert sum(where.values()) <= fit["target_uncovered_pct"] + 0.01
        if fit["target_uncovered_pct"] >= 2.0:  # a share this size falls somewhere: named regions
            parts = ("head", "shoulder", "arm", "hand", "hip", "knee", "foot")
            assert where and all(r.split(" ")[-1] in parts for r in where), where
            assert sum(where.values()) >= 0.25 * fit["target_uncovered_pct"]
