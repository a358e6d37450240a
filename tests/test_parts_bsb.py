"""The BSB matching rule on hand-made features: candidates, buddy test, IoU selection, no match."""
import numpy as np
import pytest

from engine.errors import InputError
from engine.parts.bsb import best_segmentation_buddy, iou


def _onehot(labels, d=4, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    f = np.eye(d)[labels] + noise * rng.normal(size=(len(labels), d))
    return f.astype(np.float32)


def test_iou_of_masks():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 0], bool)
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(a, a) == 1.0
    assert iou(np.zeros(3, bool), np.zeros(3, bool)) == 0.0


def test_buddy_is_found_in_the_matching_part():
    # query side: 3 parts (0, 1, 2); target: same 3 parts, different sizes
    el_lab = np.repeat([0, 1, 2], [30, 20, 10])
    tg_lab = np.repeat([0, 1, 2], [15, 25, 40])
    ef, tf = _onehot(el_lab, noise=0.05), _onehot(tg_lab, noise=0.05, seed=1)
    part = el_lab == 1
    seg = lambda e: el_lab == el_lab[e]  # a perfect segmenter
    r = best_segmentation_buddy(ef[25], ef, part, tf, segment_element=seg, k=30)
    assert r.matched and tg_lab[r.vertex] == 1
    assert r.score == pytest.approx(1.0)
    assert len(r.candidates) == 30
    assert np.all(el_lab[r.buddy_elements] == 1)


def test_no_match_when_the_part_is_missing_on_the_target():
    el_lab = np.repeat([0, 1, 2], [30, 20, 10])
    tg_lab = np.repeat([0, 2], [40, 40])  # part 1 does not exist on the target
    ef, tf = _onehot(el_lab, noise=0.05), _onehot(tg_lab, noise=0.05, seed=1)
    r = best_segmentation_buddy(ef[25], ef, el_lab == 1, tf, segment_element=lambda e: el_lab == el_lab[e], k=100)
    assert not r.matched and r.vertex == -1 and r.score == 0.0 and len(r.buddies) == 0


def test_iou_selects_among_buddies_and_object_mask_excludes_background():
    # two target vertices are buddies; the segment of the second one's nearest element overlaps more
    ef = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    part = np.array([True, True, False, False])
    tf = np.array([[1, 0.05, 0], [0.9, 0.12, 0], [0, 0, 1]], np.float32)
    segs = {0: np.array([1, 0, 1, 0], bool), 1: np.array([1, 1, 0, 0], bool)}
    r = best_segmentation_buddy(np.array([1, 0, 0]), ef, part, tf, segment_element=lambda e: segs[e], k=3)
    assert r.vertex == 1 and r.element == 1 and r.score == pytest.approx(1.0)
    # with element 1 outside the object mask, vertex 1's nearest element is 0 -> IoU 1/3
    obj = np.array([True, False, True, True])
    r2 = best_segmentation_buddy(np.array([1, 0, 0]), ef, part, tf, segment_element=lambda e: segs[e], object_mask=obj, k=3)
    assert r2.element == 0 and r2.score == pytest.approx(1 / 2)


def test_min_iou_turns_weak_buddies_into_no_match():
    ef = np.array([[1, 0], [0, 1]], np.float32)
    tf = np.array([[1, 0.1]], np.float32)
    part = np.array([True, False])
    r = best_segmentation_buddy(ef[0], ef, part, tf, segment_element=lambda e: np.array([True, True]), min_iou=0.9)
    assert not r.matched and r.score == pytest.approx(0.5)


@pytest.mark.parametrize("part", [np.zeros(4, bool), np.ones(4, bool)])
def test_empty_or_full_part_mask_is_rejected(part):
    ef = np.eye(4, dtype=np.float32)
    with pytest.raises(InputError, match="part mask"):
        best_segmentation_buddy(ef[0], ef, part, ef)


def test_feature_size_mismatch_is_rejected():
    with pytest.raises(InputError, match="feature sizes"):
        best_segmentation_buddy(np.ones(3), np.ones((4, 3)), np.array([1, 0, 0, 0], bool), np.ones((5, 2)))
