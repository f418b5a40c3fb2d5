"""Figures for several animals per frame: matching predicted to labelled instances, per-animal PCK, OKS mAP
(pycocotools) and identity tracking (motmetrics). `rtkp.eval.instances.evaluate_instances` is the entry point."""
