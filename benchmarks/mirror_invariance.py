"""Whether mirror images are frames of the same Sun: the distance of each mirror of the dataset to the dataset itself.

``train.flips`` trains a generator on each frame reversed east-west and/or north-south as well. That is only
harmless if the mirrored frames are distributed as the observed ones; otherwise the generator learns a mirrored
Sun and its images sit apart from the real ones. This measures, in the features of each judge (and optionally a
fixed encoder), the Fréchet distance of the training split to its own mirror, beside the distance between two real
splits (validation vs test, the scale of event-to-event differences), the validation split against the mirrored
test frames, and each judge's macro-F1 on the mirrored test frames beside the observed ones.

    python benchmarks/mirror_invariance.py [--data DS] [--judge-seeds 0,1,2] [--encoder effnet-lite0]

Prints JSON (``mirror_invariance.json``) and draws one frame of each class with its mirrors
(``mirror_invariance.png``).
"""

from __future__ import annotations

import numpy as np
from common import (
    base_parser,
    emit,
    get_judge,
    log,
    machine_info,
    macro_f1,
    main_wrapper,
    parse_seeds,
    real_at_size,
    resolve_data,
    setup,
)

from flaresynth.figures import channel_cmap
from flaresynth.train import FLIP_AXES

#: every mirror but the observed frame (east-west, north-south, both): the image axes it reverses
MIRRORS = {name: FLIP_AXES[name][-1] for name in ("ew", "ns", "ew+ns")}


def mirror(images: np.ndarray, name: str) -> np.ndarray:
    """``images`` (N, C, H, W) under mirror ``name`` of :data:`MIRRORS`, contiguous."""
    return np.ascontiguousarray(np.flip(images, MIRRORS[name]))


def distances(embed, real: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict:
    """Fréchet distances in the features of ``embed`` (images → (N, D)): the training split to each of its
    mirrors, validation to test (real vs real) and validation to each mirror of the test frames."""
    from flaresynth.metrics.frechet import frechet_distance

    f_train, f_val, f_test = embed(real[train]), embed(real[val]), embed(real[test])
    out = {"fd_train_vs_mirror": {m: frechet_distance(f_train, embed(mirror(real[train], m))) for m in MIRRORS},
           "fd_val_vs_test": frechet_distance(f_val, f_test),
           "fd_val_vs_mirrored_test": {m: frechet_distance(f_val, embed(mirror(real[test], m))) for m in MIRRORS}}
    out["fd_train_vs_mirror_over_val_vs_test"] = {m: v / out["fd_val_vs_test"]
                                                  for m, v in out["fd_train_vs_mirror"].items()}
    return out


def plot(ds, real: np.ndarray, path) -> None:
    """The brightest test frame of each class (the first channel) beside its three mirrors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test, y = ds.split_indices("test"), ds.label_index()
    classes = [c for i, c in enumerate(ds.classes) if (y[test] == i).any()]
    fig, axes = plt.subplots(len(classes), 4, figsize=(6.4, 1.7 * len(classes)), squeeze=False)
    for row, c in zip(axes, classes, strict=True):
        rows = test[y[test] == ds.classes.index(c)]
        frame = real[rows[np.argmax(real[rows, 0].max(axis=(1, 2)))]][None]
        for ax, (name, axes_) in zip(row, [("observed", ()), *MIRRORS.items()], strict=True):
            ax.imshow(np.flip(frame, axes_)[0, 0] if axes_ else frame[0, 0], origin="lower",
                      cmap=channel_cmap(ds.channels[0]), vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{c}: {name}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--judge-seeds", default="0,1,2", help="judges' training seeds (default 0,1,2)")
    p.add_argument("--encoder", default="effnet-lite0", help="a fixed encoder too (default effnet-lite0; none: judges only)")
    p.add_argument("--size", type=int, default=64, help="image size the judges read (default 64)")
    args = p.parse_args()
    out = setup(args)
    from flaresynth.dataset import open_dataset
    from flaresynth.errors import FlaresynthError
    from flaresynth.metrics.features import make_encoder

    ds = open_dataset(resolve_data(args))
    real = real_at_size(ds, args.size)
    train, val, test = (ds.split_indices(s) for s in ("train", "val", "test"))
    if not (len(train) and len(val) and len(test)):
        raise FlaresynthError(f"{ds.path / 'labels.csv'}: split: {len(train)} train, {len(val)} val and {len(test)} "
                              "test frames; mirror_invariance needs frames in the train, val and test splits")
    y_test, k = ds.label_index()[test], len(ds.classes)
    judges = []
    for seed in parse_seeds(args.judge_seeds):
        judge, _ = get_judge(ds, real, args.workdir, args.judge, seed, max_epochs=2 if args.quick else 40)
        row = {"judge_seed": seed, **distances(judge.embed, real, train, val, test),
               "test_f1": macro_f1(y_test, judge.predict(real[test]), k),
               "mirrored_test_f1": {m: macro_f1(y_test, judge.predict(mirror(real[test], m)), k) for m in MIRRORS}}
        log(f"judge {seed}: FD train vs mirror " + ", ".join(f"{m} {v:.3f}" for m, v in row["fd_train_vs_mirror"].items())
            + f"; val vs test {row['fd_val_vs_test']:.3f}")
        judges.append(row)
    fixed = None
    if args.encoder != "none":
        fixed = {"encoder": args.encoder, **distances(make_encoder(args.encoder).encode, real, train, val, test)}
    result = {"benchmark": "mirror_invariance", "data": str(ds.path), "size": args.size,
              "frames": {"train": len(train), "val": len(val), "test": len(test)},
              "mirrors": {name: list(axes) for name, axes in MIRRORS.items()},
              "judges": judges, "fixed_encoder": fixed, "machine": machine_info(args.threads)}
    plot(ds, real, out / "mirror_invariance.png")
    emit(result, out, "mirror_invariance")


if __name__ == "__main__":
    main_wrapper(main)
