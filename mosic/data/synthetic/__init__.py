"""The built-in synthetic video data set, with exact ground-truth point tracks.

Every video is a stack of layers, bottom to top: a textured background moved by a camera
(translation, slight zoom and rotation), then 2-5 textured objects in a fixed z-order. Each object
belongs to one of a few classes; a class has its own shape and texture family, so a feature learner
can tell classes apart. Objects translate, rotate and scale smoothly; one object per video swings
out over an image edge and comes back, and objects occlude each other and the background.

Coordinates
-----------
Points are (x, y) pixels, x along the width. Pixel (col, row) covers [col, col + 1) x [row, row + 1)
and its centre is (col + 0.5, row + 0.5); the same convention holds for a layer's texture in its own
layer-local coordinates. Layer ``l`` at frame ``t`` is placed by an affine map ``A[l, t]`` (2 x 3,
layer-local -> image), stored per frame in ``GroundTruth/<video>.json``; frames are rendered from
these maps with ``cv2.warpAffine``, and :class:`SyntheticGroundTruth` tracks points with the very same
maps, analytically.

Layout written by :func:`generate` (YouTube-VOS style)::

    <out>/classes.json                              ["background", "disc", ...]  (index = class id)
    <out>/<split>/JPEGImages/<video>/<nnnnn>.jpg
    <out>/<split>/Annotations/<video>/<nnnnn>.png   palette PNG, 0 = background, 1..K object ids
    <out>/<split>/meta.json                         {"videos": {video: {"objects": {"1": {"category", "frames"}}}}}
    <out>/<split>/GroundTruth/<video>.json          per-layer class, shape and per-frame affines
    <out>/<split>/synthetic.json                    the generation settings (guards against mixing sets)
"""

# The set in parts: drawing (shapes, textures), motion (affines, paths), scene (layers, frames),
# ground_truth (exact tracks), writing (generation), source (the frame source). Every name that
# mosic.data.synthetic always had imports from here.
from mosic.data.base import SOURCES  # noqa: F401
from mosic.data.sources import YtvosSource, list_jpegs, voc_colormap  # noqa: F401
from mosic.data.synthetic.drawing import (  # noqa: F401
    CLASSES, CLASS_SHAPES, CLASS_TEXTURES, _PALETTES, _TRI_NORMALS, _background_texture, _colourise,
    _fine_noise, _object_texture, _smooth_noise, shape_sdf,
)
from mosic.data.synthetic.motion import (  # noqa: F401
    Layer, _camera, _compose, _object_motion, _rot, _video_length, _video_rng, apply_affine,
    cv2_matrix, invert_affines,
)
from mosic.data.synthetic.scene import Scene, make_scene  # noqa: F401
from mosic.data.synthetic.ground_truth import (  # noqa: F401
    GENERATOR, GT_FORMAT, SyntheticGroundTruth, _GTLayer, _split_dir, load_classes,
    load_ground_truth,
)
from mosic.data.synthetic.writing import (  # noqa: F401
    JPEG_QUALITY, MIN_SIZE, _OUR_ENTRIES, _PALETTE, _is_complete, _prepare_split_dir, _write_json,
    generate, generation_spec, is_generated, read_spec, write_video,
)
from mosic.data.synthetic.source import SyntheticSource  # noqa: F401
