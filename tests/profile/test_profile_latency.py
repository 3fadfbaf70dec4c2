"""measure_latency on a tiny real model: a complete, positive table that round-trips."""

from __future__ import annotations

import json

import pytest
import torch

from exitsearch.errors import ConfigError
from exitsearch.profile import LatencyTable, measure_latency, resolve_device, time_call


def _tiny_table(make_tiny, batch_size: int = 2) -> LatencyTable:
    bb = make_tiny()
    return measure_latency(bb, "cpu", batch_size=batch_size, warmup=1, repeats=3)


def test_every_part_has_a_positive_median(make_tiny, tiny_overrides):
    t = _tiny_table(make_tiny)
    assert len(t.block_ms) == tiny_overrides["depth"]
    assert t.stem_ms > 0 and t.head_ms > 0 and t.full_ms > 0
    assert all(ms > 0 for ms in t.block_ms)
    assert t.parts_ms == pytest.approx(t.stem_ms + sum(t.block_ms) + t.head_ms)
    assert t.cumulative_ms(0) == t.stem_ms
    assert t.cumulative_ms(len(t.block_ms)) == pytest.approx(t.stem_ms + sum(t.block_ms))
    assert (t.device, t.device_name, t.batch_size, t.repeats) == ("cpu", "cpu", 2, 3)
    assert t.threads == torch.get_num_threads()


def test_json_round_trip(make_tiny):
    t = _tiny_table(make_tiny)
    doc = json.loads(json.dumps(t.to_json()))
    assert doc["parts_ms"] == pytest.approx(t.parts_ms)
    assert LatencyTable.from_json(doc) == t


def test_per_sample_divides_by_the_batch(make_tiny):
    t = _tiny_table(make_tiny, batch_size=4)
    s = t.per_sample()
    assert s.batch_size == 1
    assert s.stem_ms == pytest.approx(t.stem_ms / 4)
    assert s.block_ms == pytest.approx([ms / 4 for ms in t.block_ms])
    assert s.full_ms == pytest.approx(t.full_ms / 4)


def test_time_call_returns_one_time_per_repeat():
    calls = []
    times = time_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=5)
    assert len(times) == 5 and len(calls) == 7
    assert all(ms >= 0 for ms in times)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_gpu_is_a_config_error(make_tiny, device):
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device(device)
    with pytest.raises(ConfigError):
        measure_latency(make_tiny(), device, warmup=0, repeats=1)


def test_unknown_device_and_bad_batch_size(make_tiny):
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="batch_size"):
        measure_latency(make_tiny(), "cpu", batch_size=0)
