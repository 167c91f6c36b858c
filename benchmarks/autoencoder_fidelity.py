"""Flare-kernel fidelity of a latent-diffusion autoencoder: peak brightness and brightest-region area, per class.

Latent diffusion (issue 14, route b) generates in the latents of an autoencoder (``flaresynth train --preset
autoencoder-demo``), so its images can be no sharper than the autoencoder's reconstructions, and a blurred or
dimmed flare kernel is a wrong class. This benchmark encodes (posterior mean) and decodes every image of a
dataset split and reports, per class (:mod:`flaresynth.metrics.reconstruction`): the median absolute error of
the peak excess in dex and its median bias, the median relative error and bias of the brightest region's area,
and the mean L1 error in model space. The same numbers are stored in the run's ``model/flaresynth.json``
(``reconstruction``, the test split) and logged at the end of its training.

Usage: ``python benchmarks/autoencoder_fidelity.py --ae RUN --data DS [--split test]``
"""

from __future__ import annotations

from pathlib import Path

from common import base_parser, emit, log, machine_info, main_wrapper, resolve_data, setup


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--ae", required=True, help="autoencoder run folder (kind: autoencoder)")
    p.add_argument("--split", default=None, choices=("train", "val", "test"),
                   help="dataset split (default: test, else val, else train)")
    args = p.parse_args()
    out = setup(args)

    from flaresynth.dataset import open_dataset
    from flaresynth.errors import FlaresynthError
    from flaresynth.metrics.reconstruction import format_table
    from flaresynth.runs import open_run
    from flaresynth.train import reconstruction_benchmark

    run = open_run(args.ae, "cpu")
    if run.kind != "autoencoder":
        raise FlaresynthError(f"{args.ae}: a {run.kind} run, expected an autoencoder run (--ae)")
    ds = open_dataset(resolve_data(args))
    if ds.manifest.get("data_hash") != run.meta.get("data_hash"):
        log(f"note: {ds.path} is not the dataset {args.ae} was trained on")
    log(f"reconstructing {ds.path} with {args.ae}")
    result = reconstruction_benchmark(run.network, ds, args.split)
    for ch, errors in (result.get("per_channel") or {"": result["per_class"]}).items():
        log((f"{ch}:" if ch else "") + "\n" + format_table(errors))
    emit({"benchmark": "autoencoder_fidelity", "autoencoder": str(Path(args.ae)), "model_id": run.model_id,
          "data": str(ds.path), "same_dataset": ds.manifest.get("data_hash") == run.meta.get("data_hash"),
          **result, "machine": machine_info(args.threads)}, out, "autoencoder_fidelity")


if __name__ == "__main__":
    main_wrapper(main)
