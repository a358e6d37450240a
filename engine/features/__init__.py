"""Per-vertex features: geometric descriptors and semantic (DINOv2 / Stable Diffusion) features.

- ``geometric``: WKS/HKS descriptors (no models needed)
- ``semantic``: ``available(mode)``, ``vertex_features(source, target, mode, ...)``
- ``dino`` / ``sd``: the 2D backbones; ``model_store``: where their weights come from
- ``fusion`` (co-PCA, sqrt-weighted fusion), ``lift`` (pixels -> vertices), ``cache``
- ``cli``: ``python -m engine models list|download``; ``testing``: tiny random backbones

Nothing heavy is imported here: torch models load on first use.
"""
