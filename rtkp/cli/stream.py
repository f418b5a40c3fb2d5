"""`rtkp subscribe` and `rtkp keys`: the receiving end of the keypoint stream, and CURVE key pairs for it.

pyzmq is imported inside each command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import json
import sys

SUBSCRIBE_NOTICE_S = 3.0  # `rtkp subscribe` says what it waits for after this long without a message


def quiet_aware(sub, timeout_s: float | None, notice_s: float = SUBSCRIBE_NOTICE_S):
    """The subscriber's messages; after `notice_s` without one, says on stderr what it waits for (once per quiet
    spell); after `timeout_s` (None: never) without one, raises StreamTimeout."""
    import time

    from rtkp.wire.subscriber import StreamTimeout

    hint = "--server-key FILE", "--client-key FILE"
    quiet_since, told = time.monotonic(), False
    while True:
        now = time.monotonic()
        limits = [1.0] + ([] if told else [quiet_since + notice_s - now])
        limits += [quiet_since + timeout_s - now] if timeout_s else []
        msg = sub.receive(max(min(limits), 0.0))
        if msg is not None:
            quiet_since, told = time.monotonic(), False
            yield msg
            continue
        quiet = time.monotonic() - quiet_since
        if timeout_s and quiet >= timeout_s:
            raise StreamTimeout(f"no message for {quiet:.1f} s, stopping; {sub.waiting_for(*hint)}")
        if not told and quiet >= notice_s:
            print(f"rtkp subscribe: no message for {quiet:.1f} s; {sub.waiting_for(*hint)}", file=sys.stderr)
            told = True


def cmd_subscribe(args) -> int:
    import statistics

    from rtkp.cli.paths import endpoint
    from rtkp.wire import curve
    from rtkp.wire.subscriber import StreamTimeout, Subscriber

    endpoint(args.endpoint, "--endpoint")
    if args.server_key:
        curve.load_key(args.server_key, secret=False, flag="--server-key")
    if args.client_key:
        curve.load_key(args.client_key, secret=True, flag="--client-key")
    sub = Subscriber(args.endpoint, args.stream, args.latest_only, None, args.server_key, args.client_key)
    latencies, n, first_ns, last_ns, timed_out = [], 0, None, None, None
    try:
        for msg in quiet_aware(sub, args.timeout or None):
            n += 1
            latencies.append(msg.latency_ms)
            first_ns, last_ns = first_ns or msg.receive_ns, msg.receive_ns
            if args.json:
                record = {
                    "stream": msg.stream,
                    "seq": msg.seq,
                    "frame": msg.frame,
                    "pts": msg.pts,
                    "latency_ms": round(msg.latency_ms, 3),
                    "keypoints": {k.name: [k.x, k.y, k.score, k.visible, k.state] for k in msg.keypoints},
                }
                if "max_instances" in sub.meta.get(msg.stream, {}):  # a multi-instance stream: every animal
                    record["instances"] = [
                        {
                            "track": i.track,
                            "score": i.score,
                            "keypoints": {k.name: [k.x, k.y, k.score, k.visible, k.state] for k in i.keypoints},
                        }
                        for i in msg.instances
                    ]
                print(json.dumps(record), flush=True)
            else:
                pts = " ".join(f"{k.name}=({k.x:.1f},{k.y:.1f}){'' if k.visible else '?'}" for k in msg.keypoints)
                tracks = ""
                if "max_instances" in sub.meta.get(msg.stream, {}):
                    tracks = f" [{len(msg.instances)} animals: tracks {', '.join(str(i.track) for i in msg.instances)}]"
                print(f"#{msg.seq} frame {msg.frame} {msg.latency_ms:.1f} ms {pts}{tracks}", flush=True)
            if args.count and n >= args.count:
                break
    except StreamTimeout as exc:
        timed_out = exc
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    # the rate covers first to last message received: time spent waiting for the stream is not part of it
    secs = (last_ns - first_ns) / 1e9 if n > 1 else 0.0
    span = f" in {secs:.2f} s from first to last ({(n - 1) / secs:.1f}/s)" if secs > 0 else ""
    lat = f", latency p50 {statistics.median(latencies):.2f} ms" if latencies else ""
    unlabelled = f", unlabelled {sub.unlabelled}" if sub.unlabelled else ""
    print(
        f"received {n} messages{span}{lat}, gaps {sub.gaps}, skipped {sub.skipped}{unlabelled}",
        file=sys.stderr,
    )
    if timed_out is not None and n == 0:
        raise timed_out  # nothing came at all: an error (rtkp.cli.parsers.main prints it, exits with its code)
    if timed_out is not None:
        print(f"rtkp subscribe: {timed_out}", file=sys.stderr)
    return 0


def cmd_keys(args) -> int:
    from rtkp.cli.paths import file_stem, output_folder
    from rtkp.wire import write_keys

    output_folder(args.out, "--out")  # made with its parents
    file_stem(args.name, "--name")
    public, secret = write_keys(args.out, args.name)
    print(f"public key (give to peers): {public}\nsecret key (keep private):  {secret}")
    return 0
