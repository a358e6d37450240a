"""Named 3D points from 2D detections in several views: camera rays through each detected
pixel, the point nearest a bundle of rays (views that disagree dropped), and that point snapped
to the visible surface (engine.keypoints.detect for bodies, engine.keypoints.hands for fingers)."""
from __future__ import annotations

import numpy as np

# a detected point counts in a view seen with at least this visibility (MediaPipe's own drawing
# threshold); engine.keypoints.detect: a view "found the body" when it sees the torso so
MIN_VISIBILITY = 0.5
# a keypoint needs rays from this many views to be triangulated (two rays meet anywhere;
# a third checks them)
MIN_RAYS = 3


def camera_rays(cameras, xy: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through pixel positions.

    cameras : engine.render.cameras.Cameras (K views)
    xy : (K, k, 2) float pixel coordinates (x right, y down)
    returns origins (K, 3) float64 and unit directions (K, k, 3) float64
    """
    w2v = cameras.world_to_view.detach().cpu().double().numpy()
    proj = cameras.projection.detach().cpu().double().numpy()
    ndc_x = 2.0 * xy[..., 0] / resolution - 1.0
    ndc_y = 1.0 - 2.0 * xy[..., 1] / resolution
    d_view = np.stack([ndc_x / proj[:, None, 0, 0], ndc_y / proj[:, None, 1, 1], -np.ones_like(ndc_x)], axis=-1)
    d = np.einsum("kji,knj->kni", w2v[:, :3, :3], d_view)  # rotate back: R^T d
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return cameras.positions.detach().cpu().double().numpy(), d


def triangulate(origins: np.ndarray, directions: np.ndarray, weights: np.ndarray, tolerance: float,
                min_rays: int = MIN_RAYS) -> tuple[np.ndarray | None, np.ndarray]:
    """The point nearest (weighted least squares) to a bundle of rays, dropping disagreeing rays.

    origins, directions : (r, 3) float64 (unit directions); weights : (r,) >= 0
    tolerance : a ray further than this from the point is an outlier; the worst is dropped
        and the point recomputed until every kept ray is within it.
    returns the point (3,) or None (fewer than ``min_rays`` rays agree), and the (r,) bool inlier mask
    """
    keep = weights > 0
    while keep.sum() >= min_rays:
        o, d, w = origins[keep], directions[keep], weights[keep]
        proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (r, 3, 3) projectors orthogonal to each ray
        a = (w[:, None, None] * proj).sum(0)
        b = (w[:, None, None] * proj @ o[:, :, None]).sum(0)[:, 0]
        if np.linalg.cond(a) > 1e8:  # (nearly) parallel rays: no depth
            return None, np.zeros_like(keep)
        p = np.linalg.solve(a, b)
        res = np.linalg.norm((proj @ (p - o)[:, :, None])[:, :, 0], axis=1)
        worst = int(np.argmax(res))
        if res[worst] <= tolerance:
            return p, keep
        keep[np.nonzero(keep)[0][worst]] = False
    return None, np.zeros_like(keep)


def lift_detections(vertices, faces, dets: list, cams, raster, resolution: int, tolerance: float, k: int):
    """Triangulate named 2D detections of several views and snap them to the visible surface.

    dets : per view a ViewKeypoints (k points) or None; cams / raster : the views' cameras and raster
    tolerance : rays further than this from the consensus point are dropped (mesh units)
    returns points (k, 3) (NaN where fewer than MIN_RAYS views agree), vertices (k,) int64 (-1 there),
    confidence (k,) float32
    """
    from scipy.spatial import cKDTree

    views = [i for i, d in enumerate(dets) if d is not None]
    points, verts, conf = np.full((k, 3), np.nan), np.full(k, -1, np.int64), np.zeros(k, np.float32)
    if len(views) < MIN_RAYS:
        return points, verts, conf
    xy = np.stack([dets[i].xy for i in views])  # (V, k, 2)
    vis = np.stack([dets[i].visibility for i in views])  # (V, k)
    origins, dirs = camera_rays(cams[views], xy, int(resolution))
    seen_faces = raster.triangle_id[raster.mask].unique().cpu().numpy()
    seen = np.unique(faces[seen_faces].ravel())
    tree = cKDTree(vertices[seen])
    for j in range(k):
        w = np.where(vis[:, j] >= MIN_VISIBILITY, vis[:, j], 0.0)
        p, inl = triangulate(origins, dirs[:, j], w, tolerance)
        if p is None:
            continue
        points[j], verts[j] = p, seen[tree.query(p)[1]]
        # agreement of the views that see it, discounted by the views that saw it elsewhere
        conf[j] = float(vis[inl, j].mean() * inl.sum() / max(1, (w > 0).sum()))
    return points, verts, conf
