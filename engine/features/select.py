"""Which feature backend a match uses (geometric descriptors or semantic models)."""
from __future__ import annotations

from ..errors import BackendUnavailable, InputError

FEATURE_MODES = ("auto", "geometric", "dino", "dino+sd")


def choose_feature_mode(features: str, notices: list, feature_config: dict | None = None) -> str:
    """The feature mode a match runs: ``features`` itself, or for "auto" the best semantic mode whose
    models are present, else "geometric" with a note in ``notices``. Raises BackendUnavailable for an
    explicit semantic mode that cannot run here."""
    if features not in FEATURE_MODES:
        raise InputError(f"features: unknown mode {features!r}; use one of {', '.join(FEATURE_MODES)}")
    if features == "geometric":
        return features
    try:
        from . import semantic
    except ImportError:
        semantic = None
    if features == "auto":
        for mode in ("dino+sd", "dino"):
            if semantic is not None:
                ok, why = semantic.available(mode, feature_config)
                if ok:
                    return mode
        notices.append("features: semantic models not installed; using geometric features (see `python -m engine models list`)")
        return "geometric"
    if semantic is None:
        raise BackendUnavailable(f"features: {features} needs the feature extras (pip install 'stablewrap-engine[features]')")
    ok, why = semantic.available(features, feature_config)
    if not ok:
        raise BackendUnavailable(f"features: {features} unavailable: {why}")
    return features
