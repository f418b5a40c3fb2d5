"""The network's inference graph: the one forward definition that every runtime executes.

The PyTorch backend runs it, `graphs.onnx` exports it (and TensorRT builds from that export), and calibration runs it
on training crops; evaluation goes through a backend, so it measures exactly what `rtkp run` executes.

  inputs   images      (B, H, W, 3) uint8 RGB at the model size (normalisation is inside the graph)
           prototypes  (K_max, D) float32 (CoKe only: keypoints can be swapped, added and removed at run time);
                       (K_max, D + G + 1 + 10) in the generic variant: each row's generic part is matched against
                       frozen ImageNet taps (rtkp.model.generic; keypoints taught from shots), the scores adding up,
                       and its reach and rings keep it where its shots put it relative to the trained keypoints
                       (rtkp.graphs.prototypes)
           clutter     (S, D) float32   (CoKe only: the clutter summary)
           active      (K_max,) float32 (CoKe only: 1 for a prototype row in use, 0 for a free one)
  outputs  keypoints   (B, K_max, 4) float32 = x, y (model-input pixels, sub-pixel refined), score, clutter_score;
                       a free row reads score −1, clutter_score 1 (never visible).
                       A multi-instance model (manifest `max_instances` = P) reports (B, K_max, P, 6) instead: the P
                       best local maxima of each keypoint, each x, y, score, clutter_score and the centre (x, y) of
                       the animal it belongs to (rtkp.model.peaks.coke_instance_peaks); the Tracker groups them.
           features    (B, D, H/4, W/4) float32 unit features (CoKe only, with features=True): what the prototypes
                       are matched against, so that a clicked point becomes a prototype from exactly these numbers;
                       (B, D + G, H/4, W/4) in the generic variant (the generic taps upsampled after them)
           centres     (B, 2, H/4, W/4) float32 (the generic variant of a multi-instance model, with features=True):
                       the centre head's offset (dx, dy) input px from each cell to the centre of the animal there,
                       so that a shot tells which animal was clicked (rtkp.teach.shots.anchor_offsets)
           similarity  (B, K, H/4, W/4) float32 (CoKe similarity maps, or the heatmaps), only in the debug variant

K_max (the manifest's `max_keypoints`, default DEFAULT_MAX_KEYPOINTS) fixes the prototype input's
shape, so an exported graph or a built TensorRT engine serves any number of keypoints up to it without a rebuild; the
backends pad the K prototypes in use and return only their K rows. Called without `active` and with K prototypes
(training, calibration), the graph is the plain K-keypoint one.

A keypoint is visible when score − clutter_score > its margin (rtkp.visibility; the margins live in the manifest).

The FP16 variant runs the backbone and the decoder's merge in half precision between float32 inputs and outputs
(TensorRT 11 builds strongly typed networks only, so precision must be in the graph); the final projection,
normalisation, matching, peak finding and sub-pixel refinement stay float32, because the peak and the quadratic fit
depend on small differences of similarities near 1.
"""

from __future__ import annotations

import torch
from torch import nn

from rtkp.graphs.prototypes import reach_index, ring_columns
from rtkp.model.generic import GenericBranch, generic_features, generic_similarity, placement_penalty
from rtkp.model.network import STRIDE, KeypointNet
from rtkp.model.peaks import coke_instance_peaks, coke_keypoints, heatmap_keypoints, similarity

DEFAULT_TEMPERATURE = 0.07  # the soft-argmax temperature of a multi-instance graph whose manifest names none


class InferenceGraph(nn.Module):
    """(B, H, W, 3) uint8 (+ prototypes (K, D), clutter (S, D) for CoKe) -> (B, K, 4); see the module docstring.

    Takes `net` over: its dtypes are set in place (float32, or the FP16 split), so pass a net that nothing else
    still trains or runs in another precision.
    """

    def __init__(
        self,
        net: KeypointNet,
        fp16: bool = False,
        debug: bool = False,
        peak: dict | None = None,
        features: bool = False,
        instances: int | None = None,
        generic: bool = False,
    ):
        super().__init__()
        # a multi-instance model (its net has the centre head): P peaks per keypoint, see the module docstring
        self.instances = instances if net.centre is not None else None
        # the manifest's "peak" entry: {"refine": "softargmax", "temperature": T} for models trained with the
        # localisation loss; absent (quadratic fit) for older ones
        peak = peak or {}
        self.softargmax_t = float(peak["temperature"]) if peak.get("refine") == "softargmax" else None
        self.net = net.float()
        if fp16:
            # half precision for the body only; the last 1×1 projection, normalisation and heads stay float32.
            # Measured on the 96 DLC test keypoints with the first mouse model: all-FP16 moved one by 4.2 px; this
            # split moved two by 3.3 px (a near-tie in its flat similarity peak), the other 94 by < 0.5 px (median
            # 0.03 px); keeping the decoder float32 as well changed nothing, so it runs in FP16 too. The current
            # model (shaped peak, soft-argmax): one keypoint moves 0.84 px, the other 95 < 0.5 px.
            self.net.backbone.half()
            self.net.decoder.half()
            self.net.decoder.project.float()
            self.net.mean, self.net.std = self.net.mean.half(), self.net.std.half()
        self.fp16 = fp16
        self.debug = debug
        self.features = features and net.head == "coke"
        # the generic variant: prototype rows [D | G], see the module docstring
        self.generic = GenericBranch() if generic and net.head == "coke" else None
        if self.generic is not None and fp16:
            self.generic.half()

    def _weigh_clutter(self, kp: torch.Tensor, trained: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
        """Generic variant: each row's clutter score weighed by its trained part's length (kp (B, K, 4) or
        (B, K, P, 6), trained (K, D)). A trained row's is 1 (unchanged); a taught row's is the trained features' share
        of its score (rtkp.teach.features.shares), so that its evidence, score − clutter_score, compares the clutter
        with the trained part of its score only, as the taught margin does (rtkp.teach.features.keypoint_rows)."""
        if self.generic is None:
            return kp
        weight = trained.norm(dim=1)  # (K,)
        if active is not None:
            weight = torch.where(active > 0.5, weight, torch.ones_like(weight))  # free rows keep clutter_score 1
        shape = (1, -1) + (1,) * (kp.dim() - 3)
        clutter = kp[..., 3] * weight.view(shape)
        return torch.cat([kp[..., :3], clutter.unsqueeze(-1), kp[..., 4:]], -1)

    def forward(
        self,
        images: torch.Tensor,
        prototypes: torch.Tensor | None = None,
        clutter: torch.Tensor | None = None,
        active: torch.Tensor | None = None,
    ):
        """-> keypoints (B, K, 4), followed by features (B, D, H/4, W/4) when built with features=True (and by the
        centres (B, 2, H/4, W/4) in a multi-instance generic variant), and by similarity (B, K, H/4, W/4) in the debug
        variant (a tuple when there is more than one output)."""
        taps = self.net.taps(images)
        # .float() is a no-op in FP32 and the half -> float boundary in FP16
        merged = self.net.decoder.merge(taps).float()
        out = self.net.head_out(merged)
        if self.net.head == "heatmap":
            kp = heatmap_keypoints(out, STRIDE)
            return (kp, out) if self.debug else kp
        sim, penalty, out_features = None, None, out
        if self.generic is not None:
            d, size = out.shape[1], out.shape[-2:]
            masked = prototypes if active is None else prototypes * active.unsqueeze(1)
            generic, reach, rings = self.generic(taps[0]), masked[:, reach_index(d)], masked[:, ring_columns(d)]
            sim = similarity(out, masked[:, :d]) + generic_similarity(generic, masked[:, d : reach_index(d)], size)
            anchors = (masked[:, d:].abs().sum(1) == 0) & (masked[:, :d].abs().sum(1) > 0)  # trained rows in use
            penalty = placement_penalty(sim, anchors, reach, STRIDE, self.instances or 1, rings, out, clutter)
            if self.features:
                out_features = torch.cat([out, generic_features(generic, size)], 1)
        trained = prototypes[:, : out.shape[1]]  # the peaks' clutter scores read the trained features only
        if self.instances:
            t = self.softargmax_t or DEFAULT_TEMPERATURE
            centres = self.net.centre(merged)
            kp = coke_instance_peaks(out, centres, trained, clutter, STRIDE, self.instances, t, active, sim, penalty)
            kp = self._weigh_clutter(kp, trained, active)
            outputs = (kp,) + ((out_features,) if self.features else ())
            if self.features and self.generic is not None:
                outputs += (centres,)
            return outputs if len(outputs) > 1 else kp
        kp, sim = coke_keypoints(out, trained, clutter, STRIDE, self.softargmax_t, active, sim, penalty)
        kp = self._weigh_clutter(kp, trained, active)
        outputs = (kp,) + ((out_features,) if self.features else ()) + ((sim,) if self.debug else ())
        return outputs if len(outputs) > 1 else kp
