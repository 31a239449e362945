import pytest
import torch

from mosic import MosicError
from mosic.devices import autocast, resolve_device, resolve_precision


def test_a_device_resolves_to_one_that_exists_or_to_one_line_naming_the_flag():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(MosicError, match="--device 'tpu': expected auto"):
        resolve_device("tpu")
    with pytest.raises(MosicError, match="tracker.device"):
        resolve_device("gpu0", flag="tracker.device")
    if not torch.cuda.is_available():
        with pytest.raises(MosicError, match="no CUDA GPU is available"):
            resolve_device("cuda:1")


def test_the_cpu_always_runs_fp32_and_fp32_has_no_autocast():
    cpu = torch.device("cpu")
    assert [resolve_precision(p, cpu) for p in ("auto", "fp32", "bf16", "fp16")] == ["fp32"] * 4
    with pytest.raises(MosicError, match="precision 'fp64'"):
        resolve_precision("fp64", cpu)
    with autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
