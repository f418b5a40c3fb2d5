"""An exported graph's outputs: which it has (output_names), and the graph cut down to some of them, for runtimes
that compute every output of a graph they run.

ONNX Runtime runs every node of a session whether or not its output is fetched. The generic graph's `features`
output (the trained features and the generic taps upsampled to the feature grid, (B, D + G, H/4, W/4)) is read only
while teaching from shots, yet building it cost the mouse graph 17 of its 137 ms per 640×480 frame on one thread: the
frames tracked in between run the graph without it.
"""

from __future__ import annotations

from pathlib import Path


def output_names(manifest, generic: bool = False, debug: bool = False) -> list[str]:
    """The outputs of a model's exported graph, in order (rtkp.model.graph.InferenceGraph): keypoints; features
    (CoKe); centres (the generic variant of a multi-instance CoKe model: what a shot's animal is told by); similarity
    (the debug variant)."""
    coke = manifest.head == "coke"
    centres = coke and generic and bool(manifest.max_instances)
    return (
        ["keypoints"]
        + (["features"] if coke else [])
        + (["centres"] if centres else [])
        + (["similarity"] if debug else [])
    )


def keep_outputs(path: str | Path, outputs: list[str]) -> bytes:
    """The ONNX graph at `path` with only `outputs` (and the nodes they need), serialised for a runtime session."""
    import onnx
    import onnx.utils

    model = onnx.load(str(path))
    if {o.name for o in model.graph.output} <= set(outputs):
        return model.SerializeToString()
    inputs = [i.name for i in model.graph.input]
    return onnx.utils.Extractor(model).extract_model(inputs, outputs).SerializeToString()
