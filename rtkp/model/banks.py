"""CoKe's keypoint bank (prototypes) and clutter bank (a FIFO of background features).

Neither bank is trained by gradient: the keypoint bank follows the features by a moving average, the clutter bank is
refreshed with the newest background samples (CoKe, WACV 2023, §3.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class KeypointBank:
    """K unit prototypes (K, D).

    Moving average (default):  θ_k ← normalise(m·θ_k + (1 − m)·mean_b f_kb)
    Cumulative (the paper's "cumulative moving average"): θ_k ← normalise((n_k·θ_k + Σ_b f_kb) / (n_k + b_k)),
    n_k ← n_k + b_k, where b_k is the number of visible samples of keypoint k in the batch.
    A prototype is initialised from the first batch in which its keypoint is visible.
    """

    def __init__(self, num_keypoints: int, dim: int, momentum: float = 0.9, cumulative: bool = False):
        self.prototypes = torch.zeros(num_keypoints, dim)
        self.counts = torch.zeros(num_keypoints)
        self.momentum = momentum
        self.cumulative = cumulative

    @property
    def initialised(self) -> torch.Tensor:
        """(K,) bool: which prototypes have seen at least one sample."""
        return self.counts > 0

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """features: (N, D) unit vectors of visible keypoints; labels: (N,) keypoint index of each."""
        features = features.detach().float()
        for k in labels.unique().tolist():
            sel = features[labels == k]
            n = len(sel)
            if self.counts[k] == 0:
                new = sel.mean(0)
            elif self.cumulative:
                new = (self.counts[k] * self.prototypes[k] + sel.sum(0)) / (self.counts[k] + n)
            else:
                new = self.momentum * self.prototypes[k] + (1 - self.momentum) * sel.mean(0)
            self.prototypes[k] = F.normalize(new, dim=0)
            self.counts[k] += n

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"prototypes": self.prototypes.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.prototypes = state["prototypes"].clone().float()
        self.counts = state["counts"].clone().float()


class ClutterBank:
    """A FIFO of the newest `size` background features (size, D); `filled` counts valid rows."""

    def __init__(self, size: int, dim: int):
        self.features = torch.zeros(size, dim)
        self.ptr = 0
        self.filled = 0

    @torch.no_grad()
    def push(self, features: torch.Tensor) -> None:
        """Append (N, D) features, overwriting the oldest entries when full."""
        features = features.detach().float()
        size = len(self.features)
        if len(features) >= size:
            features = features[-size:]
        n = len(features)
        idx = (self.ptr + torch.arange(n)) % size
        self.features[idx] = features
        self.ptr = int((self.ptr + n) % size)
        self.filled = min(self.filled + n, size)

    def contents(self) -> torch.Tensor:
        """The valid entries, oldest first: (filled, D)."""
        if self.filled < len(self.features):
            return self.features[: self.filled]
        return torch.cat([self.features[self.ptr :], self.features[: self.ptr]])

    def summary(self, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
        """(k, D) unit centres of the bank by spherical k-means: the compact clutter input of the exported graph.

        Farthest-point initialisation (each new centre is the entry least similar to those chosen) so that no mode of
        the background is left without a centre.
        """
        data = self.contents()
        if len(data) <= k:
            return F.normalize(data, dim=1)
        gen = torch.Generator().manual_seed(seed)
        chosen = [int(torch.randint(len(data), (1,), generator=gen))]
        best = data @ data[chosen[0]]
        for _ in range(k - 1):
            nxt = int(best.argmin())
            chosen.append(nxt)
            best = torch.maximum(best, data @ data[nxt])
        centres = data[chosen].clone()
        for _ in range(iters):
            assign = (data @ centres.T).argmax(1)
            for j in range(k):
                members = data[assign == j]
                if len(members):
                    centres[j] = F.normalize(members.mean(0), dim=0)
        return centres

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"features": self.features.clone(), "ptr": torch.tensor(self.ptr), "filled": torch.tensor(self.filled)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.features = state["features"].clone().float()
        self.ptr = int(state["ptr"])
        self.filled = int(state["filled"])
