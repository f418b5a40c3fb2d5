"""Labelled keypoint data: readers (COCO, DeepLabCut) that produce one `Sample` type, augmentation, occluders."""

from rtkp.data.sample import Dataset, Sample

__all__ = ["Dataset", "Sample"]
