"""CUDA checks (`pytest -m gpu`): PyTorch CUDA FP16 and CUDA graphs against ONNX Runtime FP32 on the CPU."""

import numpy as np
import pytest
import torch
from conftest import render_scene

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_torch_cuda_fp16_and_graphs_match_cpu_fp32(tiny_model):
    from rtkp.backends import read_model_info
    from rtkp.backends.onnxruntime import OnnxRuntimeBackend
    from rtkp.backends.torch import TorchBackend

    info = read_model_info(tiny_model)
    rng = np.random.default_rng(0)
    images = np.stack([render_scene(rng, (128, 96))[0] for _ in range(4)])
    ref = OnnxRuntimeBackend(info, threads=1).infer(images)
    fp16 = TorchBackend(info, device="cuda", fp16=True).infer(images)
    graphs = TorchBackend(info, device="cuda", fp16=True, cuda_graphs=True)
    first, again = graphs.infer(images), graphs.infer(images)
    assert np.abs(fp16[..., :2] - ref[..., :2]).max() < 0.5
    np.testing.assert_allclose(first, fp16, atol=1e-3)
    np.testing.assert_allclose(again, first, atol=1e-6)
