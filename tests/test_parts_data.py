"""Part matching on real FAUST shapes (needs ../shared/data): every body part, and "no match" for a cut arm."""
import os

import numpy as np
import pytest

from engine.bench.datasets import default_data_dir

pytestmark = pytest.mark.data

DATA = default_data_dir()
HAVE = (DATA / "faust5k" / "pairs.txt").is_file()


@pytest.fixture(scope="module")
def faust():
    from engine.bench.gt_parts import SetParts

    return SetParts.load(os.path.join(DATA, "faust5k"), "faust5k")


@pytest.mark.skipif(not HAVE, reason="benchmark data not available")
def test_ground_truth_parts_are_consistent(faust):
    assert faust.names == ["torso", "arm_left", "arm_right", "head", "leg_left", "leg_right"]
    pm, lab = faust.mesh_and_labels("tr_reg_001")
    assert lab.shape == (pm.mesh.n_vertices,)
    counts = np.bincount(lab, minlength=len(faust.names))
    assert np.all(counts > 0.05 * len(lab))  # every part is a real region
    # left is +x on FAUST: the left arm lies on the +x side of the body
    v = pm.mesh.vertices
    assert v[lab == 1, 0].mean() > 0 > v[lab == 2, 0].mean()


@pytest.mark.skipif(not HAVE, reason="benchmark data not available")
def test_every_part_matches_and_a_cut_arm_gives_no_match(faust):
    from engine.bench.parts import cut_part
    from engine.parts.shape_match import PartMatcher

    pa, la = faust.mesh_and_labels("tr_reg_000")
    pb, lb = faust.mesh_and_labels("tr_reg_001")
    m = PartMatcher(pa, pb)
    for p, name in enumerate(faust.names):
        res, tmask = m.match_clean(np.nonzero(la == p)[0])
        assert res.matched and lb[res.vertex] == p, name
        assert np.mean(lb[tmask] == p) > 0.5, name
    arm = faust.names.index("arm_left")
    pc, lc = cut_part(pb, lb, arm)
    assert not np.any(lc == arm)
    cm = PartMatcher(pa, pc)
    res, tmask = cm.match_clean(np.nonzero(la == arm)[0])
    assert not res.matched and not tmask.any()
    # the other arm is still found on the cut target
    other = faust.names.index("arm_right")
    res, _ = cm.match_clean(np.nonzero(la == other)[0])
    assert res.matched and lc[res.vertex] == other
