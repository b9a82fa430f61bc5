"""What every benchmark prints beside its figures: the machine they came from."""
import os
import platform


def cpu_name() -> str:
    """The CPU model string from /proc/cpuinfo (e.g. 'AMD EPYC 9B14'), or what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """'<CPU model>, N cores, torch X' for a benchmark's header line."""
    import torch
    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn(), after one warm-up call (allocator, kernels, lazy imports)."""
    import statistics
    import time
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
