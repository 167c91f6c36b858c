"""What an autoencoder's decoder leaves out of the frames, and what its decoder noise model puts back.

A latent generator's images are decoded images, so they are no sharper than the autoencoder's reconstructions of
real frames. This measures, on a dataset's test split, the radial power spectrum of the real frames, of their
reconstructions (posterior mean, decoded) and of the reconstructions with a draw of the autoencoder's decoder noise
model (:mod:`flaresynth.models.decoder_noise`), as log10 ratios to the real frames' power in five bands of
wavelength; and the model's residual std by decoded value. With ``--runs`` it adds the images of those latent
generators, sampled as ``flaresynth demo`` samples them (``--per-class`` a class), with and without the noise.

    python benchmarks/decoder_noise.py [--data DS] [--autoencoder demo:autoencoder] [--runs demo:discrete]

Prints JSON (``decoder_noise.json``) and draws the spectra beside one bright test frame, its reconstruction and the
reconstruction with the noise (``decoder_noise.png``). On a simulated Sun the figures describe the simulator's
frames, not the real Sun's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from common import base_parser, emit, log, machine_info, main_wrapper, real_at_size, resolve_data, setup
from generator_quality import reconstruct, sample_like_the_demo

from flaresynth.figures import channel_cmap

#: Bands of spatial frequency, as fractions of the Nyquist frequency (wavelengths of 16-32 px ... 2-2.7 px at 64 px).
BANDS = ((1 / 16, 1 / 8), (1 / 8, 1 / 4), (1 / 4, 1 / 2), (1 / 2, 3 / 4), (3 / 4, 1.0))


def radial_power(images: np.ndarray) -> np.ndarray:
    """Mean power over images and channels at each integer radius of spatial frequency (cycles per image, 0 to
    side/2), each image's mean removed first."""
    x = np.asarray(images, dtype=np.float64)
    side = x.shape[-1]
    power = (np.abs(np.fft.fft2(x - x.mean(axis=(-2, -1), keepdims=True))) ** 2).mean(axis=(0, 1))
    k = np.fft.fftfreq(side) * side
    radius = np.rint(np.hypot(*np.meshgrid(k, k, indexing="ij"))).astype(int)
    keep = radius <= side // 2
    return np.bincount(radius[keep], power[keep]) / np.maximum(np.bincount(radius[keep]), 1)


def band_names(side: int) -> list[str]:
    """Each band of :data:`BANDS` by its wavelengths in px at ``side`` px."""
    nyquist = side / 2
    return [f"{side / (hi * nyquist):.3g}-{side / (lo * nyquist):.3g} px" for lo, hi in BANDS]


def band_ratios(images: np.ndarray, real: np.ndarray) -> dict:
    """log10 of the images' power over the real frames' in each band of :data:`BANDS` (0: as much structure)."""
    side = real.shape[-1]
    p, r = radial_power(images), radial_power(real)
    out = {}
    for name, (lo, hi) in zip(band_names(side), BANDS, strict=True):
        k = np.arange(len(r))
        band = (k >= max(1, lo * side / 2)) & (k <= hi * side / 2)
        out[name] = round(float(np.log10(p[band].sum() / r[band].sum())), 4)
    return out


def plot(real: np.ndarray, rec: np.ndarray, noisy: np.ndarray, rows: dict, channel: str, path) -> None:
    """Left: each image set's power over the real frames' by wavelength; right: the brightest test frame, its
    reconstruction and the reconstruction with the noise (first channel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(10, 3.2))
    ax = fig.add_subplot(1, 4, 1)
    side, r = real.shape[-1], radial_power(real)
    k = np.arange(1, len(r))
    for name, images in rows.items():
        ax.plot(side / k, np.log10(radial_power(images)[1:] / r[1:]), label=name)
    ax.axhline(0, c="k", lw=0.6)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("wavelength [px]")
    ax.set_ylabel("log10 power / real frames'")
    ax.legend(fontsize=6, loc="lower left")
    i = int(np.argmax(real[:, 0].max(axis=(1, 2))))
    for j, (title, img) in enumerate((("real test frame", real[i]), ("reconstruction", rec[i]),
                                      ("reconstruction + noise", noisy[i]))):
        a = fig.add_subplot(1, 4, 2 + j)
        a.imshow(img[0], origin="lower", cmap=channel_cmap(channel), vmin=-1, vmax=1)
        a.set_title(title, fontsize=8)
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--autoencoder", default="demo:autoencoder",
                   help="autoencoder run (folder or shipped name) with its decoder noise model (default demo:autoencoder)")
    p.add_argument("--runs", default="", help="comma-separated latent generators to add, with and without the noise")
    p.add_argument("--per-class", type=int, default=40, help="images per class of each generator (default 40)")
    args = p.parse_args()
    out = setup(args)
    from flaresynth.dataset import open_dataset
    from flaresynth.errors import FlaresynthError
    from flaresynth.runs import open_run

    ds = open_dataset(resolve_data(args))
    ae = open_run(args.autoencoder, "cpu")
    if ae.kind != "autoencoder":
        raise FlaresynthError(f"--autoencoder {args.autoencoder}: a {ae.kind} run, not an autoencoder")
    if ae.decoder_noise is None:
        raise FlaresynthError(f"--autoencoder {args.autoencoder}: no decoder noise model in {ae.folder} (fit one with "
                              "`flaresynth refit --run RUN --data DS`)")
    if ae.meta.get("data_hash") != ds.manifest.get("data_hash"):
        raise FlaresynthError(f"--autoencoder {args.autoencoder}: trained on another dataset than {ds.path}")
    test = ds.split_indices("test")
    if len(test) == 0:
        raise FlaresynthError(f"{ds.path / 'labels.csv'}: split: no test frames to compare with")
    real = real_at_size(ds, ae.network.sample_size)[test]
    rec = reconstruct(ae.network, real)
    noisy = ae.decoder_noise.add(rec, args.seed + np.arange(len(rec)))
    rows = {"reconstructions": rec, "reconstructions + decoder noise": noisy}
    generators = [name for name in args.runs.split(",") if name]
    with tempfile.TemporaryDirectory(dir=args.workdir if args.workdir.is_dir() else None) as scratch:
        for name in generators:
            for noise in (False, True):
                (Path(scratch) / str(noise)).mkdir(exist_ok=True)
                samples, _ = sample_like_the_demo(name, Path(ds.path), args.per_class, args.seed,
                                                  Path(scratch) / str(noise), decoder_noise=noise)
                rows[f"{name}{' + decoder noise' if noise else ''}"] = np.asarray(samples.images)
    spectra = {name: band_ratios(images, real) for name, images in rows.items()}
    for name, bands in spectra.items():
        log(f"{name}: log10 power / real " + ", ".join(f"{b} {v:+.3f}" for b, v in bands.items()))
    model = ae.decoder_noise
    centres = (model.edges[:-1] + model.edges[1:]) / 2
    result = {"benchmark": "decoder_noise", "data": str(ds.path), "data_hash": ds.manifest.get("data_hash"),
              "autoencoder": str(ae.path), "autoencoder_id": ae.meta.get("model_id"), "test_frames": len(test),
              "image_size": int(real.shape[-1]), "seed": args.seed, "per_class": args.per_class,
              "power_log10_ratio_to_real": spectra,
              "residual_std_by_decoded_value": {"value": [round(float(c), 3) for c in centres],
                                                "std": [[round(float(s), 5) for s in row] for row in model.std]},
              "machine": machine_info(args.threads),
              "simulated_sun_note": "on a simulated Sun these spectra describe the simulator's frames"}
    plot(real, rec, noisy, rows, ds.channels[0], out / "decoder_noise.png")
    emit(result, out, "decoder_noise")


if __name__ == "__main__":
    main_wrapper(main)
