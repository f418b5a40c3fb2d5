"""Small keypoint-teaching inputs shared by the teaching tests: unit feature rows and a keypoint's shots."""

import numpy as np

from rtkp.teach.features import unit
from rtkp.teach.keypoint_set import Taught

D = 8


def unit_rows(rng, n, d=D):
    """(n, d) float32 random unit rows."""
    return unit(rng.normal(size=(n, d))).astype(np.float32)


def taught_shots(rng, shots=2, views=3, spread=0.1, d=D):
    """Shots of one keypoint: views spread about one direction, random look-alikes (4 per shot)."""
    centre = unit_rows(rng, 1, d)[0]
    v = unit(centre + spread * rng.normal(size=(shots, views, d))).astype(np.float32)
    return Taught(v, unit_rows(rng, shots * 4, d).reshape(shots, 4, d))
