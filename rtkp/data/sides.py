"""Which keypoints a horizontal flip swaps: pairing names by their left/right side tokens.

Two names pair when one becomes the other by swapping exactly one side token, case kept:

* the word left<->right as lower, Title or UPPER case (left/right, Left/Right, LEFT/RIGHT), anywhere in the name
  (`leftear`/`rightear`, `Left_Ear`, `LEFT_HIP`);
* a single letter L<->R or l<->r that is a token on its own: nothing but the start of the name, a separator
  (anything not a letter or digit: `_ - .` space ...), a digit or a camelCase boundary on either side of it.
  For `L`/`R` that means no capital letter before it and no small letter after it, unless the capital after it
  starts a word (`eyeL`, `forelegL4`, `L_hand`, `hand.R`, `LShoulder`; not `Lower`, `LEFT`); for `l`/`r` no letter
  before it and no small letter after it (`lEye`, `hand_l`, `r2`; not `lip`, `ulna`, `Finger1`).

A name containing at least one side token is "sided". Names are taken in order; each pairs with the first of its
swapped names that is present and not yet paired, so every index is in at most one pair. A pair is
(left-side index, right-side index), pairs are ordered by their smaller index, and sided names left without a
partner are reported as `unpaired`: a flip would leave them in place although their names say they have a side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SWAP = {"left": "right", "Left": "Right", "LEFT": "RIGHT", "L": "R", "l": "r"}
_SWAP |= {b: a for a, b in _SWAP.items()}
_LEFT = {"left", "Left", "LEFT", "L", "l"}
_WORD = re.compile("left|right|Left|Right|LEFT|RIGHT")


@dataclass(frozen=True)
class SidePairing:
    pairs: list[tuple[int, int]]  # (left-side index, right-side index), swapped by a horizontal flip
    unpaired: list[str]  # sided names with no partner

    def describe(self, names: Sequence[str]) -> str:
        """One line, e.g. "flip pairs: eyeL<->eyeR, wingL<->wingR; sided but unpaired: tail_L"."""
        text = "flip pairs: " + (", ".join(f"{names[a]}<->{names[b]}" for a, b in self.pairs) or "none")
        return text + (f"; sided but unpaired: {', '.join(self.unpaired)}" if self.unpaired else "")


def side_tokens(name: str) -> list[tuple[int, str]]:
    """(position, token) of every side token in `name`, in order of position."""
    found = [(m.start(), m.group()) for m in _WORD.finditer(name)]
    for i, c in enumerate(name):
        if c not in "LRlr":
            continue
        prev, nxt, nxt2 = name[i - 1 : i], name[i + 1 : i + 2], name[i + 2 : i + 3]
        if c.isupper():
            alone = not prev.isupper() and not nxt.islower() and not (nxt.isupper() and not nxt2.islower())
        else:
            alone = not prev.isalpha() and not nxt.islower()
        if alone:  # never inside a matched word: its letters all have a letter of the same case beside them
            found.append((i, c))
    return sorted(found)


def pair_sides(names: Sequence[str]) -> SidePairing:
    """Flip pairs and unpaired sided names of `names` (see the module docstring for the rule)."""
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        index.setdefault(n, i)
    partner: dict[int, int] = {}
    pairs, unpaired = [], []
    for i, name in enumerate(names):
        tokens = side_tokens(name)
        if i in partner or not tokens:
            continue
        for pos, tok in tokens:
            j = index.get(name[:pos] + _SWAP[tok] + name[pos + len(tok) :])
            if j is not None and j != i and j not in partner:
                partner[i], partner[j] = j, i
                pairs.append((i, j) if tok in _LEFT else (j, i))
                break
        else:
            unpaired.append(name)
    return SidePairing(sorted(pairs, key=min), unpaired)


def resolve_flip_pairs(names: Sequence[str], pairs: str | Iterable[Sequence[str]]) -> list[tuple[int, int]]:
    """Index pairs swapped by a horizontal flip: "auto" -> `pair_sides(names).pairs`; otherwise `pairs` lists
    [name, name] pairs, and pairs naming an unknown keypoint are ignored."""
    if pairs == "auto":
        return pair_sides(names).pairs
    index = {n: i for i, n in enumerate(names)}
    return [(index[a], index[b]) for a, b in pairs if a in index and b in index]
