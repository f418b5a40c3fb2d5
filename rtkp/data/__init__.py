"""Labelled keypoint data: readers (COCO, DeepLabCut) that produce one `Sample` type, augmentation, occluders."""

from .sample import Dataset, Sample

__all__ = ["Dataset", "Sample"]
