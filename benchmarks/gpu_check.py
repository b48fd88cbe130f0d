"""GPU check (issue 5): real GPU assignment on a machine with an NVIDIA GPU.

Runs ``init(num_gpus=1)``, four tasks with ``num_gpus=0.25`` and two with ``num_gpus=1``,
and checks inside each task, with ``torch.cuda`` (or ``nvidia-smi`` if torch is missing),
that it sees its assigned device; that the four quarter-GPU tasks ran at the same time;
and that the two whole-GPU tasks did not. Prints a report and exits non-zero on a failed
check. Usage: ``python benchmarks/gpu_check.py`` (with raylite importable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import raylite


def _device_report(hold: float) -> dict[str, object]:
    start = time.time()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    report: dict[str, object] = {
        "pid": os.getpid(),
        "CUDA_VISIBLE_DEVICES": visible,
        "get_gpu_ids": raylite.get_gpu_ids(),
    }
    try:
        import torch

        report["torch_device_count"] = torch.cuda.device_count()
        if torch.cuda.is_available():
            x = torch.ones(1024, 1024, device="cuda")
            report["torch_sum"] = float((x @ x).sum())
            report["device_name"] = torch.cuda.get_device_name(0)
    except ImportError:
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
            report["nvidia_smi"] = out.stdout.strip()
        except FileNotFoundError:
            report["nvidia_smi"] = "not found: no NVIDIA driver on this machine"
    time.sleep(hold)
    report["start"], report["end"] = start, time.time()
    return report


def _overlap(reports: list[dict[str, object]]) -> bool:
    """True when every report's interval overlaps every other's (they ran at once)."""
    latest_start = max(float(r["start"]) for r in reports)  # type: ignore[arg-type]
    earliest_end = min(float(r["end"]) for r in reports)  # type: ignore[arg-type]
    return latest_start < earliest_end


def main() -> int:
    raylite.init(num_cpus=max(4, os.cpu_count() or 1), num_gpus=1)
    try:
        check = raylite.remote(_device_report)
        quarters = raylite.get([check.options(num_gpus=0.25).remote(2.0) for _ in range(4)])
        wholes = raylite.get([check.options(num_gpus=1).remote(1.0) for _ in range(2)])
    finally:
        raylite.shutdown()
    problems = []
    for r in quarters + wholes:
        if r["get_gpu_ids"] != [0] or r["CUDA_VISIBLE_DEVICES"] not in ("0",):
            problems.append(f"task pid={r['pid']} saw {r['CUDA_VISIBLE_DEVICES']!r}")
        if r.get("torch_device_count", 1) != 1 or r.get("torch_sum", 1024.0**3) != 1024.0**3:
            problems.append(f"task pid={r['pid']} could not use its GPU: {r}")
    if not _overlap(quarters):
        problems.append("the four num_gpus=0.25 tasks did not run at the same time")
    if _overlap(wholes):
        problems.append("the two num_gpus=1 tasks overlapped on one GPU")
    print(json.dumps({"quarter_gpu_tasks": quarters, "whole_gpu_tasks": wholes}, indent=1))
    print("quarter tasks ran together:", _overlap(quarters))
    print("whole tasks ran one at a time:", not _overlap(wholes))
    print("PROBLEMS:" if problems else "GPU check passed.", *problems, sep="\n  ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
