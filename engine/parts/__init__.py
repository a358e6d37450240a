"""Part matching with Best Segmentation Buddies (BSB): source part or image click -> target part.

>>> from engine.parts import match_part, match_image_part
>>> r = match_part((Vs, Fs), group_indices, (Vt, Ft))
>>> r.bsb_vertex, r.target_vertices, r.score      # bsb_vertex == -1: no counterpart
>>> r = match_image_part("ref.png", (Vt, Ft), click=(120, 88))

Modules: ``bsb`` (the matching rule), ``shape_match`` (shape-to-shape),
``image_query`` / ``image_match`` (image-to-shape), ``segment`` (3D part
growing), ``distill`` (MLP feature distillation), ``features`` (descriptor +
position fusion), ``guidance`` (part pairs in the registration loss), ``cli`` (``python -m engine part``).
The benchmark and its ground-truth parts live in ``engine.bench.parts`` / ``engine.bench.gt_parts``.
"""
from .bsb import NO_MATCH, BSBResult, best_segmentation_buddy
from .shape_match import PartMatch, PartMatcher, match_part


def match_image_part(image, target, **options):
    """Image-to-shape part matching; see :func:`engine.parts.image_match.match_image_part`."""
    from .image_match import match_image_part as _m

    return _m(image, target, **options)


__all__ = ["match_part", "match_image_part", "PartMatch", "PartMatcher", "BSBResult", "best_segmentation_buddy", "NO_MATCH"]
