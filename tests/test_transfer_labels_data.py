"""Body-part labels through a (ground-truth) FAUST map land in the right part (needs ../shared/data)."""
import os

import numpy as np
import pytest

from engine.bench.datasets import default_data_dir, load_pairs, load_triangles

pytestmark = pytest.mark.data

DATA = default_data_dir()


@pytest.mark.skipif(not (DATA / "faust5k" / "pairs.txt").is_file(), reason="benchmark data not available")
def test_labels_through_the_ground_truth_map_meet_the_bar():
    from engine.bench.gt_parts import SetParts
    from engine.bench.transfer_labels import ground_truth_correspondence, label_accuracy

    pair = load_pairs(DATA, "faust5k", only=[2])[0]
    parts = SetParts.load(os.path.join(DATA, "faust5k"), "faust5k")
    corr = ground_truth_correspondence(pair)
    _, tri_a = load_triangles(pair.path_a)
    pa, la = parts.mesh_and_labels(pair.name_a)
    pb, lb = parts.mesh_and_labels(pair.name_b)
    acc, pred = label_accuracy(la[pa.orig_to_clean], tri_a, lb[pb.orig_to_clean], corr)
    assert acc >= 0.95
    assert set(np.unique(pred)) == set(range(len(parts.names)))
