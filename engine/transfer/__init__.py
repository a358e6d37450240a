"""Transfers through a correspondence: retopology, UVs, textures, attributes, morphs.

Every function is numpy in, numpy out, and takes the maps of an
:class:`engine.Correspondence` (``tgt_to_src_face`` / ``tgt_to_src_bary`` and
the reverse) plus the meshes' arrays:

- :func:`engine.transfer.uv.transfer_uvs` (seam-aware), :func:`~engine.transfer.uv.transfer_uvs_to_source`
- :func:`engine.transfer.texture.bake_texture`
- :func:`engine.transfer.attributes.transfer_vertex_attributes`, ``transfer_skin_weights``,
  ``transfer_vertex_labels``, ``transfer_face_labels``; :func:`engine.transfer.inpaint.harmonic_fill`
- :func:`engine.transfer.morph.morph_sequence`
- :func:`engine.transfer.retopo.fit_retopology`

``python -m engine transfer uv|texture|attributes|morph|retopo`` (see
:mod:`engine.transfer.cli`) runs them on files.
"""
from .attributes import transfer_face_labels, transfer_skin_weights, transfer_vertex_attributes, transfer_vertex_labels
from .inpaint import harmonic_fill
from .morph import morph_sequence
from .retopo import RetopoResult, fit_retopology
from .texture import bake_texture
from .uv import UVTransfer, transfer_uvs, transfer_uvs_to_source

__all__ = [
    "transfer_uvs",
    "transfer_uvs_to_source",
    "UVTransfer",
    "bake_texture",
    "transfer_vertex_attributes",
    "transfer_skin_weights",
    "transfer_vertex_labels",
    "transfer_face_labels",
    "harmonic_fill",
    "morph_sequence",
    "fit_retopology",
    "RetopoResult",
]
