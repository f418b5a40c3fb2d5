"""Flip pairing by side tokens (rtkp.data.sides)."""

import pytest

from rtkp.data.sides import SidePairing, pair_sides, resolve_flip_pairs, side_tokens

COCO17 = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
]
BODY12 = COCO17[5:]  # the 12 body keypoints of COCO, without the face


def named(names, pairing: SidePairing) -> list[tuple[str, str]]:
    return [(names[a], names[b]) for a, b in pairing.pairs]


def test_animal_names_with_bare_side_letters():
    names = ["eyeL", "eyeR", "wingL", "wingR", "forelegL4", "forelegR4", "head", "thorax"]
    got = pair_sides(names)
    assert got.pairs == [(0, 1), (2, 3), (4, 5)]
    assert got.unpaired == []
    assert got.describe(names) == "flip pairs: eyeL<->eyeR, wingL<->wingR, forelegL4<->forelegR4"


def test_mouse_names_pair_once():
    names = ["snout", "leftear", "rightear", "tailbase"]
    assert pair_sides(names) == SidePairing([(1, 2)], [])


@pytest.mark.parametrize(
    "left,right",
    [
        ("Left_Ear", "Right_Ear"),
        ("l_eye", "r_eye"),
        ("hand.L", "hand.R"),
        ("LEFT_HIP", "RIGHT_HIP"),
        ("lEye", "rEye"),
        ("L_hand", "R_hand"),
        ("LeftEar", "RightEar"),
        ("left-paw", "right-paw"),
        ("hand_l", "hand_r"),
        ("front paw L", "front paw R"),
        ("LShoulder", "RShoulder"),
    ],
)
def test_side_conventions_pair_in_either_order(left, right):
    assert pair_sides(["x", left, right]) == SidePairing([(1, 2)], [])
    # a name with only R tokens finds its L counterpart; the pair still lists the left side first
    assert pair_sides([right, "x", left]) == SidePairing([(2, 0)], [])


@pytest.mark.parametrize(
    "names",
    [
        ["lip", "rip"],
        ["ulna", "urna"],
        ["Lower", "Rower"],
        ["elbow"],
        ["Finger1", "Hand", "Tongue", "Joystick1", "Joystick2"],
        ["a1_blue_green", "c1_green_red", "d3_yellow_blue"],  # demo target names
        ["TAIL", "EAR", "NOSE", "TAIL_BASE"],  # all-caps words ending in L/R
    ],
)
def test_letters_inside_words_are_not_sides(names):
    got = pair_sides(names)
    assert got == SidePairing([], [])
    assert got.describe(names) == "flip pairs: none"


def test_side_tokens_positions():
    assert side_tokens("lEye") == [(0, "l")]
    assert side_tokens("forelegL4") == [(7, "L")]
    assert side_tokens("LEFT_HIP") == [(0, "LEFT")]
    assert side_tokens("left_hand_R") == [(0, "left"), (10, "R")]
    assert side_tokens("Lower_lip") == []


def test_sided_name_without_counterpart_is_unpaired():
    names = ["eyeL", "nose"]
    got = pair_sides(names)
    assert got == SidePairing([], ["eyeL"])
    assert got.describe(names) == "flip pairs: none; sided but unpaired: eyeL"
    assert pair_sides(["hand.R", "left_ear", "nose"]).unpaired == ["hand.R", "left_ear"]


def test_each_index_in_at_most_one_pair():
    # "L_arm_L" could pair with both; the first present swap wins and the other name is left unpaired
    names = ["L_arm_L", "R_arm_L", "L_arm_R"]
    assert pair_sides(names) == SidePairing([(0, 1)], ["L_arm_R"])


def test_coco17_and_body12_pair_completely():
    got = pair_sides(COCO17)
    assert got.unpaired == []
    assert got.pairs == [(i, i + 1) for i in range(1, 17, 2)]
    assert named(COCO17, got) == [(COCO17[i], COCO17[i + 1]) for i in range(1, 17, 2)]
    got = pair_sides(BODY12)
    assert got == SidePairing([(i, i + 1) for i in range(0, 12, 2)], [])


def test_openpose_body25_pairs_completely():
    names = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip"]
    names += ["RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe"]
    names += ["LHeel", "RBigToe", "RSmallToe", "RHeel"]
    got = pair_sides(names)
    assert got.unpaired == []
    assert len(got.pairs) == 11
    for a, b in got.pairs:
        assert names[a].startswith("L") and names[b] == "R" + names[a][1:]


def test_resolve_flip_pairs_explicit_and_auto():
    names = ["nose", "eyeL", "eyeR", "wingL", "wingR"]
    assert resolve_flip_pairs(names, [["eyeL", "eyeR"], ["wingL", "tail"]]) == [(1, 2)]
    assert resolve_flip_pairs(names, [("wingR", "wingL")]) == [(4, 3)]
    assert resolve_flip_pairs(names, []) == []
    assert resolve_flip_pairs(names, "auto") == [(1, 2), (3, 4)]


def test_training_flips_only_when_the_names_pair_into_sides(capsys):
    from rtkp.config import load_config
    from rtkp.train.recipe import flip_policy

    cfg = load_config(None, ["augment.flip=0.5"])
    assert flip_policy(["eyeL", "eyeR", "head"], cfg).augment.flip == 0.5
    assert "flip pairs: eyeL<->eyeR" in capsys.readouterr().err
    unpaired = flip_policy(["eyeL", "wingL", "wingR"], cfg)
    err = capsys.readouterr().err
    assert unpaired.augment.flip == 0.0 and "eyeL look sided but have no counterpart" in err
    assert flip_policy(["Hand", "Finger1", "Joystick1"], cfg).augment.flip == 0.0
    assert "no left/right keypoints" in capsys.readouterr().err
    explicit = load_config(None, ["augment.flip=0.5", "augment.flip_pairs=[]"])
    assert flip_policy(["Hand", "Finger1"], explicit).augment.flip == 0.5
