import numpy as np

from rtkp.geometry import Letterbox


def test_letterbox_round_trip_and_image_alignment():
    lb = Letterbox.fit((640, 360), (320, 256))
    assert lb.scale == 0.5 and lb.pad_x == 0 and lb.pad_y == (256 - 180) // 2
    odd = Letterbox.fit((641, 359), (320, 256))
    pts = np.array([[0.0, 0.0], [640.0, 358.0]])
    np.testing.assert_allclose(odd.to_source(odd.to_model(pts)), pts, atol=1e-4)
    pts = np.random.default_rng(0).uniform(0, 300, (50, 2))
    np.testing.assert_allclose(lb.to_source(lb.to_model(pts)), pts, atol=1e-4)
    # a bright pixel block lands where to_model says it does
    image = np.zeros((360, 640, 3), np.uint8)
    image[100:104, 200:204] = 255
    out = lb.apply(image, pad_value=0)
    ys, xs = np.nonzero(out[..., 0])
    weights = out[ys, xs, 0].astype(float)
    centre = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    np.testing.assert_allclose(centre, lb.to_model(np.array([201.5, 101.5])), atol=0.05)
