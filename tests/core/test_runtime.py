"""The runtime: torchrun's environment, devices per rank, joining the process group."""

from __future__ import annotations

import pytest
import torch

from geopsp.core.errors import ModelFileError, ResourceError, UsageError


@pytest.fixture
def two_gpus_rank_1(monkeypatch):
    """This process as rank 1 of 2 under torchrun, on a machine with two (pretend) GPUs."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_classify_device_cuda_takes_the_local_rank_gpu(two_gpus_rank_1, tmp_path, monkeypatch):
    """``torchrun ... classify --device cuda``: rank 1 loads its model on cuda:1, not cuda:0."""
    from model_files import write_model_file

    from geopsp.classify.predictor import Predictor
    from geopsp.models import modelfile

    path = write_model_file(
        tmp_path / "m.safetensors", [{"value": 0, "name": "a", "color": [0] * 3}]
    )
    seen = []

    def load_model(p, device):  # where the weights would go; no GPU needed
        seen.append(torch.device(device))
        raise ModelFileError("stop here")

    monkeypatch.setattr(modelfile, "load_model", load_model)
    for request in ("cuda", "auto"):
        with pytest.raises(ModelFileError):
            Predictor.from_file(str(path), request)
    assert seen == [torch.device("cuda", 1)] * 2


def test_setup_joins_with_the_local_rank_gpu(two_gpus_rank_1, monkeypatch):
    from geopsp.core import runtime

    calls = []
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(runtime.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    rt = runtime.setup("cuda", backend="gloo")
    assert rt.device == torch.device("cuda", 1) and (rt.rank, rt.world, rt.local_rank) == (1, 2, 1)
    assert calls == [torch.device("cuda", 1), "gloo"]
    assert runtime.resolve_device("cuda:0", 1, 2) == torch.device("cuda", 0)  # explicit: as given


def test_launch_reads_torchrun_variables(monkeypatch):
    from geopsp.core.runtime import Launch, launch

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launch() == Launch(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch() == Launch(3, 4, 1)


def test_device_errors(monkeypatch):
    from geopsp.core.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UsageError, match="--device must be auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    with pytest.raises(ResourceError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ResourceError, match=r"only 1 CUDA device"):
        resolve_device("cuda:3")
