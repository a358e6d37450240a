"""StableWrap engine: dense shape correspondence by registration.

>>> import engine
>>> result = engine.match((V_src, F_src), (V_tgt, F_tgt))
>>> result.fitted_vertices.shape
(len(V_src), 3)

numpy in, numpy out; torch inside. See ``engine.pipeline.match`` for options.
"""
import os as _os

# idle OpenMP workers sleep instead of spinning (a busy machine otherwise multiplies the time of
# every small torch operation); takes effect when engine is imported before torch (engine.threads)
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .correspondence import Correspondence
from .errors import BackendUnavailable, Cancelled, InputError, StableWrapError
from .mesh import Mesh, PreparedMesh, load_mesh, prepare_mesh
from .progress import CancelToken

__version__ = "0.1.0"


def match(source, target, **options) -> Correspondence:
    """Dense correspondence between two meshes; see :func:`engine.pipeline.match`."""
    from .pipeline import match as _match

    return _match(source, target, **options)


__all__ = [
    "match",
    "Correspondence",
    "Mesh",
    "PreparedMesh",
    "load_mesh",
    "prepare_mesh",
    "CancelToken",
    "StableWrapError",
    "InputError",
    "Cancelled",
    "BackendUnavailable",
    "__version__",
]
