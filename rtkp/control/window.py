"""Click-to-add in the live window: mouse clicks and keys in, control requests out.

The window (rtkp.sinks.live.DisplaySink) sends the same requests as any client of the control socket, through a
private endpoint of the same server, so what the socket's tests cover is what the window does; this class holds
only the window's side (what was clicked, the name being typed, what to undo) and has no OpenCV in it, so it is
tested headless.

  left click   hold this frame and point; type a name, Enter adds it (a name already added gets one more shot),
               Esc cancels. Enter on an empty name takes the suggested one (kp1, kp2, …).
  u            undo the latest shot taken in this window (the keypoint it made, or only that shot)
  d            delete the keypoint nearest the pointer
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENTER, ESCAPE, BACKSPACE = (10, 13), 27, (8, 127)
PICK_RADIUS_PX = 25.0  # `d` deletes the keypoint nearest the pointer within this distance (source pixels)


@dataclass(frozen=True)
class Pending:
    """A clicked point waiting for its name: (x, y) in source pixels of `image` (H, W, 3) RGB."""

    x: float
    y: float
    image: np.ndarray


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) RGB -> PNG bytes (lossless: the model sees the frame the user clicked)."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ValueError("cannot encode the frame as PNG")
    return data.tobytes()


class ClickTeacher:
    """See the module docstring. client: an rtkp.control.remote.ControlClient (its send/replies are used)."""

    def __init__(self, client):
        self.client = client
        self.pending: Pending | None = None
        self.typed = ""
        self.pointer: tuple[float, float] | None = None
        self.status = "click a point to add a keypoint"
        self.undo: list[tuple[str, bool]] = []  # (name, whether the shot created it)
        self.inflight: dict[int, tuple[str, str, bool]] = {}  # request id -> (op, name, created)
        self.suggested = 1

    @property
    def naming(self) -> bool:
        return self.pending is not None

    def click(self, x: float, y: float, image: np.ndarray) -> None:
        self.pending, self.typed = Pending(float(x), float(y), np.array(image, copy=True)), ""

    def move(self, x: float, y: float) -> None:
        self.pointer = (float(x), float(y))

    def key(self, code: int, names: list[str], added: dict, keypoints: np.ndarray | None = None) -> bool:
        """A key press; returns whether it was the window's (else the caller may treat it, e.g. q to quit).

        names: the keypoints tracked now; added: {name: shots} of those added from shots; keypoints: (K, 2) their
        current positions (for `d`)."""
        if code < 0:
            return False
        if self.naming:
            if code in ENTER:
                self._send_add(names, added)
            elif code == ESCAPE:
                self.pending, self.status = None, "cancelled"
            elif code in BACKSPACE:
                self.typed = self.typed[:-1]
            elif 32 <= code < 127:
                self.typed += chr(code)
            return True
        if code == ord("u"):
            self._undo()
            return True
        if code == ord("d"):
            self._delete_nearest(names, keypoints)
            return True
        return False

    def _send_add(self, names: list[str], added: dict) -> None:
        name = self.typed.strip() or self._suggestion(names)
        extend = name in added
        sample = {"image": encode_png(self.pending.image), "x": self.pending.x, "y": self.pending.y}
        rid = self.client.send("add", name=name, samples=[sample], extend=extend)
        self.inflight[rid] = ("add", name, not extend)
        self.pending, self.typed = None, ""
        self.status = f"teaching {name} ..."

    def _suggestion(self, names: list[str]) -> str:
        while f"kp{self.suggested}" in names:
            self.suggested += 1
        return f"kp{self.suggested}"

    def _undo(self) -> None:
        if not self.undo:
            self.status = "nothing to undo"
            return
        name, created = self.undo.pop()
        rid = self.client.send("remove", name=name, shot=not created)
        self.inflight[rid] = ("undo", name, created)
        self.status = f"undoing {name} ..."

    def _delete_nearest(self, names: list[str], keypoints: np.ndarray | None) -> None:
        if self.pointer is None or keypoints is None or not len(names):
            self.status = "point at a keypoint, then press d"
            return
        dist = np.linalg.norm(np.asarray(keypoints, np.float64) - np.array(self.pointer), axis=1)
        k = int(np.argmin(dist))
        if dist[k] > PICK_RADIUS_PX:
            self.status = "no keypoint under the pointer"
            return
        rid = self.client.send("remove", name=names[k])
        self.inflight[rid] = ("remove", names[k], False)
        self.status = f"removing {names[k]} ..."

    def poll(self) -> None:
        """Take the replies that arrived (never waits) and say how each went."""
        for reply in self.client.replies(0.0):
            op, name, created = self.inflight.pop(reply.get("id"), ("?", "?", False))
            if not reply.get("ok"):
                self.status = f"{op} {name}: {reply.get('error')}"
                continue
            if op == "add":
                self.undo.append((name, created))
                self.status = f"{name}: {reply['shots']} shot(s), margin {reply['margin']:.2f}"
                if reply.get("warning"):
                    self.status += " (look-alike: add shots from other frames)"
            elif op == "undo":
                self.status = f"undone: {'removed ' if created else 'one shot of '}{name}"
            else:
                self.undo = [(n, c) for n, c in self.undo if n != name]
                self.status = f"removed {name}"

    def hud_lines(self, added: dict) -> list[str]:
        """The window's extra HUD lines: shots per added keypoint, the name being typed, the latest status."""
        lines = []
        if added:
            lines.append("added: " + ", ".join(f"{n} ({s} shot{'s' if s != 1 else ''})" for n, s in added.items()))
        if self.naming:
            lines.append(f"name: {self.typed}_   (Enter: add, Esc: cancel)")
        lines.append(self.status + "   [click: add  u: undo  d: delete  q: quit]")
        return lines
