"""Publish→receive latency of rtkp's protocol on loopback, against raw pyzmq with a same-size payload.

    python tools/protocol_latency.py [--messages 5000] [--rate 1000] [--keypoints 12] [--instances N]

--instances N: a multi-instance stream (`.meta` has max_instances) whose every message carries N animals.

Both sides run in this process's machine clock (CLOCK_MONOTONIC), publisher and subscriber in separate processes.
rtkp's figure includes building the msgpack header and decoding it into a KeypointMessage on the other side.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np


def frame(i: int, k: int, instances: int, rng: np.random.Generator):
    """A KeypointFrame with random keypoints: one animal (instances 0: a single-instance stream's frame), or
    `instances` animals, tracks 0.. (the frame-level arrays are the first animal's, as for a multi-instance model)."""
    from rtkp.messages import Instance, KeypointFrame

    def arrays():
        return rng.random((k, 2), np.float32) * 600, rng.random(k, np.float32), np.ones(k, bool), np.ones(k, np.uint8)

    animals = tuple(Instance(t, 0.5, *arrays()) for t in range(instances))
    first = animals[0] if animals else None
    own = (first.keypoints, first.scores, first.visible, first.state) if first else arrays()
    return KeypointFrame(i, i / 30, time.monotonic_ns(), (640, 480), *own, instances=animals or None)


def rtkp_publisher(endpoint: str, n: int, rate: float, k: int, instances: int) -> None:
    from rtkp.wire.publisher import Publisher

    meta = {"keypoints": [f"k{i}" for i in range(k)]}
    if instances:
        meta["max_instances"] = instances
    pub = Publisher(endpoint, "lat", "bench", meta)
    rng = np.random.default_rng(0)
    time.sleep(1.0)
    for i in range(n):
        pub.publish(frame(i, k, instances, rng))
        time.sleep(1 / rate)
    pub.close()


def raw_publisher(endpoint: str, n: int, rate: float, size: int) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.bind(endpoint)
    time.sleep(1.0)
    pad = b"x" * max(size - 8, 0)
    for _ in range(n):
        sock.send_multipart([b"raw", time.monotonic_ns().to_bytes(8, "little") + pad])
        time.sleep(1 / rate)
    sock.close(0)


def measure_rtkp(endpoint, n, rate, k, instances):
    from rtkp.wire.subscriber import Subscriber

    p = mp.get_context("spawn").Process(target=rtkp_publisher, args=(endpoint, n, rate, k, instances))
    sub = Subscriber(endpoint, timeout_s=5)
    p.start()
    lat = []
    for msg in sub:
        lat.append((msg.receive_ns - msg.publish_ns) / 1e3)
        if len(lat) >= n:
            break
    p.join()
    sub.close()
    return np.array(lat)


def measure_raw(endpoint, n, rate, size):
    import zmq

    p = mp.get_context("spawn").Process(target=raw_publisher, args=(endpoint, n, rate, size))
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(endpoint)
    p.start()
    lat = []
    try:
        while len(lat) < n:
            _, payload = sock.recv_multipart()
            lat.append((time.monotonic_ns() - int.from_bytes(payload[:8], "little")) / 1e3)
    except zmq.Again:
        pass
    p.join()
    sock.close(0)
    return np.array(lat)


def main() -> None:
    import msgpack

    from rtkp.wire.schema import encode_keypoints

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--keypoints", type=int, default=12)
    ap.add_argument("--instances", type=int, default=0, help="animals per message (0: a single-instance stream)")
    args = ap.parse_args()
    k, instances = args.keypoints, args.instances
    kf = frame(1, k, instances, np.random.default_rng(0))
    size = len(msgpack.packb(encode_keypoints(kf, 1, "lat", "bench", instances=instances > 0)))
    rt = measure_rtkp("tcp://127.0.0.1:5597", args.messages, args.rate, k, instances)
    raw = measure_raw("tcp://127.0.0.1:5598", args.messages, args.rate, size)
    for name, lat in (("rtkp (header+decode)", rt), ("raw pyzmq", raw)):
        print(
            f"{name:>22}: {len(lat)} msgs of ~{size} B, p50 {np.percentile(lat, 50):.0f} us, "
            f"p99 {np.percentile(lat, 99):.0f} us"
        )


if __name__ == "__main__":
    main()
