"""The synthetic set as a frame source (registered as ``synthetic``)."""

from __future__ import annotations

from pathlib import Path

from mosic import MosicError
from mosic.data.base import SOURCES
from mosic.data.sources import YtvosSource
from mosic.data.synthetic.ground_truth import SyntheticGroundTruth, load_classes, load_ground_truth
from mosic.data.synthetic.writing import read_spec


@SOURCES.register("synthetic")
class SyntheticSource(YtvosSource):
    """A set written by :func:`generate` (``mosic-data synthetic``): YouTube-VOS layout plus ground truth."""

    kind = "synthetic"
    layout = "{root}/{split}/JPEGImages/<video>/*.jpg (make a set with: mosic-data synthetic --out {root} --videos N)"

    def __init__(self, root: str | Path, split: str = "train"):
        super().__init__(root, split)
        self._gt_cache: dict[str, SyntheticGroundTruth] = {}

    def _scan(self):
        infos = super()._scan()
        if not (self.split_root / "GroundTruth").is_dir():
            raise MosicError(
                f"synthetic: {self.split_root} has no GroundTruth folder, so it is not a synthetic set "
                f"(make one with: mosic-data synthetic --out {self.root} --videos N)"
            )
        return infos

    def ground_truth(self, video_id: str) -> SyntheticGroundTruth:
        if video_id not in self._gt_cache:
            self._gt_cache[video_id] = load_ground_truth(self.root, video_id, self.split)
        return self._gt_cache[video_id]

    def classes(self) -> list[str]:
        return load_classes(self.root)

    def spec(self) -> dict | None:
        return read_spec(self.root, self.split)
