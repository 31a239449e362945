"""Readers for the segmentation data sets the evaluation protocols run on.

Image data sets (:func:`open_seg_dataset`, a :class:`SegDataset` of :class:`SegSample`)
-------------------------------------------------------------------------------------
``voc``        Pascal VOC 2012: ``<root>/JPEGImages/<id>.jpg``, ``<root>/SegmentationClass/<id>.png``
               (palette or greyscale PNG: pixel value = class index, 255 = void, not scored) and
               ``<root>/ImageSets/Segmentation/<split>.txt`` (train | val | trainval). Split
               ``trainaug`` reads ``ImageSets/Segmentation/trainaug.txt`` with the masks in
               ``SegmentationClassAug/`` (the SBD-augmented set, 10,582 images). 21 classes with the
               standard names, or the names listed in ``<root>/classes.txt`` (one per line, index =
               class id) when that file exists, e.g. in a synthetic set exported with
               :func:`export_synthetic_voc`. ``root`` may also be a folder holding ``VOC2012/`` or
               ``VOCdevkit/VOC2012/`` (or another year, e.g. ``VOC2011``; the newest is taken).
``ade20k``     ADE20K SceneParsing (ADEChallengeData2016): ``<root>/images/<split>/*.jpg`` and
               ``<root>/annotations/<split>/<same name>.png`` (split: training | validation, also
               train | val). 150 classes. The raw annotation value 0 ("other", not one of the 150)
               is not scored: it becomes IGNORE (255), and classes 1..150 become 0..149, so
               ``num_classes`` is 150 and there is no background class.
``synthetic``  The built-in synthetic video set (``mosic-data synthetic``) seen as images: every
               ``every``-th frame (default 4) of each video of ``<root>/<split>``, id
               ``<video>_<nnnnn>``; label = semantic class of the object under each pixel (through
               the ground truth; 0 = background). Split ``val`` means ``valid`` when there is no
               ``val`` folder.

Video data sets (:func:`open_video_dataset`, a :class:`VideoSegDataset` of :class:`VideoClipSample`)
---------------------------------------------------------------------------------------------------
``davis``      DAVIS-2017: ``<root>/JPEGImages/480p/<video>/*.jpg``, ``<root>/Annotations/480p/<video>/*.png``
               and ``<root>/ImageSets/2017/<split>.txt`` (train | val). ``num_classes`` is None: labels
               are the per-video instance ids (0 = background), as in the annotation PNGs.
``ytvos``      YouTube-VOS: ``<root>/<split>/JPEGImages/<video>/*.jpg``, ``<root>/<split>/Annotations/<video>/*.png``
               and ``<root>/<split>/meta.json``. Instance ids become categories through meta.json;
               category ``c`` gets class index 1 + (position of ``c`` among all the categories
               meta.json names, sorted), 0 = background. (The valid/test meta.json of the
               challenge hide the categories; those splits are refused.) Split ``heldout``: the
               videos of ``train`` that training leaves out (:mod:`mosic.data.holdout`, the
               fraction ``holdout``).
``synthetic``  As above, per video; labels are semantic classes through the ground truth.

A clip is ``frames`` (default 4) of a video's annotated frames (frames with an annotation PNG),
drawn at random without replacement and sorted (the TimeTuning protocol); the draw depends only
on ``seed`` and the video id, so it is the same on every run and for every subset of videos. A
video with fewer annotated frames gives all of them.

Everything the user can get wrong (missing folders or split lists, images without masks, masks of
the wrong kind or with out-of-range values, empty splits) raises :class:`mosic.MosicError` naming
the file or folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mosic import MosicError
from mosic.data.sources import voc_colormap  # noqa: F401  (kept importable from here)
from mosic.evaluation.datasets.ade20k import ADE20K_CLASSES, _open_ade20k  # noqa: F401
from mosic.evaluation.datasets.base import (  # noqa: F401  (the names this module always had)
    DEFAULT_CLIP_FRAMES, IGNORE, SYNTHETIC_EVERY, SegDataset, SegSample, VideoClipSample, VideoSegDataset,
    select_frames, _seed_entropy,
)
from mosic.evaluation.datasets.davis import _open_davis
from mosic.evaluation.datasets.synthetic import (  # noqa: F401
    EXPORT_FORMAT, EXPORT_MARKER, _open_synthetic_seg, _open_synthetic_video, export_synthetic_voc,
)
from mosic.evaluation.datasets.voc import VOC_CLASSES, _open_voc  # noqa: F401
from mosic.evaluation.datasets.ytvos import _open_ytvos

# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
#: the registry: data set name -> its reader (one module each)
SEG_READERS: dict[str, Callable[..., SegDataset]] = {
    "voc": lambda root, split, every: _open_voc(root, split),
    "ade20k": lambda root, split, every: _open_ade20k(root, split),
    "synthetic": _open_synthetic_seg,
}
VIDEO_READERS: dict[str, Callable[..., VideoSegDataset]] = {
    "davis": _open_davis,
    "ytvos": _open_ytvos,
    "synthetic": _open_synthetic_video,
}
SEG_KINDS = tuple(SEG_READERS)
VIDEO_KINDS = tuple(VIDEO_READERS)
#: each image data set's default splits: (train, val)
IMAGE_SPLITS = {"voc": ("trainaug", "val"), "ade20k": ("training", "validation"), "synthetic": ("train", "valid")}
#: each video data set's default split (YouTube-VOS: the challenge's valid/test meta.json hide the
#: categories, so the videos of its train split that training leaves out are scored: mosic.data.holdout)
VIDEO_SPLITS = {"davis": "val", "ytvos": "heldout", "synthetic": "valid"}
_ALIASES = {"ade": "ade20k", "pascal-voc": "voc", "youtube-vos": "ytvos", "davis2017": "davis", "davis-2017": "davis"}


def _kind(kind: str, allowed: tuple[str, ...], what: str) -> str:
    k = str(kind).lower()
    k = _ALIASES.get(k, k)
    if k not in allowed:
        raise MosicError(f"unknown {what} data set {kind!r}; choose one of: {', '.join(allowed)}")
    return k


def open_seg_dataset(kind: str, root, split: str, *, every: int = SYNTHETIC_EVERY) -> SegDataset:
    """An image segmentation data set: ``kind`` is voc | ade20k | synthetic (see the module docstring).
    ``every`` (synthetic only) takes every n-th frame of each video."""
    k = _kind(kind, SEG_KINDS, "image segmentation")
    root = Path(root)
    return SEG_READERS[k](root, split, every)


def open_video_dataset(kind: str, root, split: str, frames: int = DEFAULT_CLIP_FRAMES, seed: int = 0,
                       holdout: float | None = None) -> VideoSegDataset:
    """A video segmentation data set: ``kind`` is davis | ytvos | synthetic; clips of ``frames`` random
    sorted annotated frames per video, drawn with ``seed`` (see the module docstring). ``holdout``:
    the fraction of YouTube-VOS train videos that split ``heldout`` holds (those the run being
    evaluated left out of training; default: the packaged ytvos pipeline's ``train.holdout``)."""
    k = _kind(kind, VIDEO_KINDS, "video segmentation")
    if int(frames) < 1:
        raise MosicError(f"frames per clip must be at least 1, got {frames}")
    _seed_entropy(seed)
    root = Path(root)
    extra = {"holdout": holdout} if k == "ytvos" else {}  # only YouTube-VOS has a held-out split
    return VIDEO_READERS[k](root, split, frames, seed, **extra)
