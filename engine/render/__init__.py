"""Multi-view rendering: camera rigs, rasterisers (pure torch, nvdiffrast on CUDA), shading.

    from engine.render import rasterize
    from engine.render.cameras import orbit_cameras
    cams = orbit_cameras(8, elevations=(20, -10))
    r = rasterize(vertices, faces, cams, 256)     # r.triangle_id (8, 256, 256), -1 on background
"""
from .cameras import Cameras, orbit_cameras
from .raster import BACKENDS, Raster, nvdiffrast_status, rasterize

__all__ = ["Cameras", "orbit_cameras", "Raster", "rasterize", "nvdiffrast_status", "BACKENDS"]
