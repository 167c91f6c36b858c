"""Where tensors are computed: deterministic GPU kernels.

Same seed, same image, and the scope of that claim. Every random draw of flaresynth comes from a generator
seeded per image (sampling) or per step and rank (training), so on a CPU a seed gives the same images bit for
bit run after run, and to float rounding whatever the sampling batch size (batched kernels differ in the last
bits). On a GPU the kernels themselves may not repeat: cuDNN may pick a convolution algorithm by timing
candidates (``cudnn.benchmark``), some algorithms (and some cuBLAS reductions) are non-deterministic, and
float32 convolutions may run in TF32 on Ampere and later GPUs. :func:`use_deterministic_kernels`
(``--deterministic`` on ``train`` and ``sample``) turns all of that off, at some cost in speed: then a run
repeats bit for bit on the same GPU model, software and batch size. Across batch sizes images of one seed
agree to float32 rounding, as on a CPU; mixed precision (fp16/bf16) rounds more coarsely again.

Across CPU models the float kernels differ (the SIMD level torch dispatches to, oneDNN's and the BLAS's code
paths), so bit-for-bit holds on one CPU model. Measured on an Intel Xeon and an AMD EPYC (both AVX-512, torch
2.13.0): the shipped generators' samples were identical, while a judge CNN trained for 30-40 epochs from the same
seed was not (long training amplifies the last bits); :func:`cpu_description` is what a trained artefact records.
"""

from __future__ import annotations

import os
import platform

import torch

#: cuBLAS's repeatable-reduction workspace setting (see the CUDA "Reproducibility" notes of torch).
CUBLAS_WORKSPACE = ":4096:8"


def use_deterministic_kernels() -> None:
    """Make CUDA results repeat run to run and whatever the batch size, for the rest of this process.

    cuDNN: deterministic algorithms, no benchmark search. float32 convolutions and matmuls in full IEEE
    precision instead of TF32 (torch's ``fp32_precision`` settings). ``torch.use_deterministic_algorithms``
    with a warning (not an error) for an operation that has no deterministic version. cuBLAS reads
    ``CUBLAS_WORKSPACE_CONFIG`` when it starts, so it is set here, before any GPU work, unless already set.
    On a CPU the results repeat without it.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.use_deterministic_algorithms(True, warn_only=True)


def cpu_description() -> dict:
    """The CPU model (``/proc/cpuinfo``'s model name, else ``platform.processor()``, else the architecture) and the
    SIMD level torch's CPU kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``, e.g. ``AVX512``)."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


__all__ = ["use_deterministic_kernels", "cpu_description", "CUBLAS_WORKSPACE"]

