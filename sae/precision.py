"""Which precision is fast on this machine: one place that decides, for every command.

bf16 matmuls run about 4x faster than fp32 on CPUs with native bf16 (AVX-512 BF16, AMX)
and about 100x slower on CPUs without it (AVX2 only), where torch emulates them. So
`auto` never assumes: a short timed probe (fp32 against bf16, at the shape of an SAE
encoder or a model's MLP on a batch of tokens) decides, and the result is cached per
(CPU model, torch version, thread count) in the cache folder. On CUDA the device's
capability decides (`torch.cuda.is_bf16_supported`).

`SAEX_FAST_BF16=0` forces the "no fast bf16" decision (and `=1` the opposite) without a
probe, so tests and CI can run both paths on any machine.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch

from sae.fsutil import cache_dir, write_json_atomic

ENV_VAR = "SAEX_FAST_BF16"
PROBE_SHAPE = (256, 576, 1536)  # tokens x d_model x width: the matmuls that dominate here, kept small
# bf16 must beat fp32 by this factor to be chosen: a tie is not worth the rounding.
MIN_SPEEDUP = 1.2
PROBE_VERSION = 1


@dataclass(frozen=True)
class Speed:
    """The decision and what it rests on."""

    fast_bf16: bool
    reason: str
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.fast_bf16 else torch.float32

    def record(self) -> dict:
        """What manifests and run files store about the choice."""
        return asdict(self)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gflops(dtype: torch.dtype, seconds: float = 0.08) -> float:
    n, d, w = PROBE_SHAPE
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g).to(dtype)
    b = torch.randn(d, w, generator=g).to(dtype)
    out = torch.empty(n, w, dtype=dtype)
    torch.mm(a[:16], b, out=out[:16])  # warm-up (kernel selection, page faults) at a tiny cost
    reps, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or reps >= 50:
            return 2 * n * d * w * reps / max(elapsed, 1e-9) / 1e9  # a coarse clock can read 0


def measure_cpu() -> Speed:
    """Time fp32 against bf16 now (about 0.2 s; a slow bf16 stops after one repetition)."""
    fp32 = _gflops(torch.float32)
    bf16 = _gflops(torch.bfloat16)
    fast = bf16 >= MIN_SPEEDUP * fp32
    verdict = "bf16 is faster" if fast else "this CPU has no fast bf16"
    return Speed(fast, f"{verdict}: measured {bf16:.0f} GFLOP/s in bf16 against {fp32:.0f} in fp32 "
                       f"({torch.get_num_threads()} threads)", round(fp32, 1), round(bf16, 1))


def _cache_file() -> Path:
    return cache_dir() / "precision.json"


def _cache_key() -> str:
    return (f"v{PROBE_VERSION}|{_cpu_name()}|torch {torch.__version__}|{torch.get_num_threads()} threads|"
            f"{torch.backends.cpu.get_cpu_capability()}|{os.environ.get('ATEN_CPU_CAPABILITY', '')}|"
            f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}")


def _forced() -> Speed | None:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("0", "no", "false"):
        return Speed(False, f"{ENV_VAR}={value} forces fp32")
    if value in ("1", "yes", "true"):
        return Speed(True, f"{ENV_VAR}={value} forces bf16")
    return None


def _cpu_speed() -> Speed:
    path, key = _cache_file(), _cache_key()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), dict):
        try:
            return Speed(**cached[key])
        except TypeError:
            pass
    speed = measure_cpu()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, (cached if isinstance(cached, dict) else {}) | {key: asdict(speed)})
    except Exception:  # a read-only cache only costs the next process another probe
        pass
    return speed


@cache
def _decide(device_type: str, device_index: int | None, env: str) -> Speed:
    forced = _forced()
    if forced is not None:
        return forced
    if device_type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device_index)
        return Speed(ok, f"{name} {'supports' if ok else 'does not support'} bf16")
    if device_type != "cpu":
        return Speed(False, f"no bf16 probe for {device_type}: fp32")
    return _cpu_speed()


_announced: set[str] = set()


def speed(device: str | torch.device = "cpu", announce: bool = True) -> Speed:
    """Is bf16 fast on `device`? Printed once per process, with the reason."""
    device = torch.device(device)
    decision = _decide(device.type, device.index, os.environ.get(ENV_VAR, ""))
    if announce and decision.reason not in _announced:
        _announced.add(decision.reason)
        choice = "bf16 where accurate enough" if decision.fast_bf16 else "fp32"
        print(f"precision: {choice} ({decision.reason})", file=sys.stderr, flush=True)
    return decision


def resolve(precision: str, device: str | torch.device = "cpu") -> tuple[str, Speed | None]:
    """`auto` -> "bf16" when it is fast here, else "fp32"; an explicit choice is kept.
    Returns the precision and the decision it rests on (None when not asked)."""
    if precision != "auto":
        return precision, None
    decision = speed(device)
    return ("bf16" if decision.fast_bf16 else "fp32"), decision
