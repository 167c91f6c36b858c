"""Leak-free splits: contiguous time blocks, buffers between splits, fallback to smaller blocks, chronological."""

import numpy as np
import pandas as pd
import pytest

from flaresynth.dataset import BuildConfig, assign_splits, block_edges
from flaresynth.errors import FlaresynthError


def frame_table(days=60, every_h=2, seed=0, start="2024-05-01"):
    """Frames every ``every_h`` hours; a third are flare frames of events peaking within 30 min of them."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=int(days * 24 / every_h), freq=f"{every_h}h")
    n = len(times)
    flare = rng.random(n) < 0.3
    peaks = times + pd.to_timedelta(rng.uniform(-30, 30, n), unit="min")
    labels = np.where(flare, rng.choice(["C", "M", "X"], n, p=[0.8, 0.17, 0.03]), rng.choice(["A", "B"], n))
    return pd.DataFrame({
        "time_ns": times.to_numpy(dtype="datetime64[ns]"),
        "event_peak": np.where(flare, peaks.strftime("%Y-%m-%dT%H:%M:%SZ"), ""),
        "selection": np.where(flare, "flare", "quiet"),
        "label": labels,
        "peak24_flux": 1e-6, "peak24_class": "C", "flare24": False,
    })


def _min_gap_days(table, a, b):
    ta = np.sort(table.loc[table["split"] == a, "time_ns"].to_numpy())
    tb = np.sort(table.loc[table["split"] == b, "time_ns"].to_numpy())
    pos = np.clip(np.searchsorted(tb, ta), 1, len(tb) - 1)
    gaps = np.minimum(np.abs(ta - tb[pos - 1]), np.abs(tb[pos] - ta))
    return gaps.min() / np.timedelta64(1, "D")


@pytest.mark.parametrize("rule", ["week", "rotation", "month", "chronological"])
def test_no_test_frame_lies_within_the_buffer_of_a_train_frame(rule):
    table, info = assign_splits(frame_table(days=120), BuildConfig(split_by=rule, buffer_days=2.0))
    assert set(table["split"]) == {"train", "val", "test"}
    for a, b in (("test", "train"), ("val", "train"), ("test", "val")):
        assert _min_gap_days(table, a, b) >= 2.0, (rule, a, b)
    assert info["rule"] == rule and info["dropped_in_buffers"] > 0 and not info["warnings"]
    # every block is whole: all its frames share one split
    for blk in info["blocks"]:
        inside = table[(table["time_ns"] >= pd.Timestamp(blk["start"]).tz_localize(None))
                       & (table["time_ns"] < pd.Timestamp(blk["end"]).tz_localize(None))]
        assert set(inside["split"]) <= {blk["split"]}


def test_buffers_drop_flare_frames_too():
    raw = frame_table(days=120)
    table, info = assign_splits(raw, BuildConfig(split_by="week", buffer_days=2.0))
    dropped = raw[~raw["time_ns"].isin(table["time_ns"])]
    assert (dropped["selection"] == "flare").any() and info["dropped_in_buffers"] == len(dropped)


def test_the_same_seed_gives_the_same_blocks_and_every_class_reaches_every_split_when_it_can():
    a = assign_splits(frame_table(days=200), BuildConfig(split_by="rotation"))[1]
    b = assign_splits(frame_table(days=200), BuildConfig(split_by="rotation"))[1]
    assert a["blocks"] == b["blocks"]
    table = assign_splits(frame_table(days=200), BuildConfig(split_by="week"))[0]
    assert all(set(table.loc[table["split"] == s, "label"]) == set("ABCMX") for s in ("train", "val", "test"))


def test_chronological_trains_on_the_past_and_tests_on_the_future():
    table, _ = assign_splits(frame_table(days=40), BuildConfig(split_by="chronological"))
    t = {s: table.loc[table["split"] == s, "time_ns"] for s in ("train", "val", "test")}
    assert t["train"].max() < t["val"].min() and t["val"].max() < t["test"].min()


def test_too_short_for_rotations_falls_back_to_weeks_with_a_warning():
    table, info = assign_splits(frame_table(days=30), BuildConfig(split_by="rotation"))
    assert info["rule"] == "week" and info["rule_requested"] == "rotation"
    assert len(info["warnings"]) == 1 and "fell back to week" in info["warnings"][0]


def test_no_label_window_reaches_across_a_split_boundary():
    raw = frame_table(days=120)
    table, info = assign_splits(raw, BuildConfig(split_by="week", buffer_days=0.5))
    assert info["label_windows_cut"] > 0
    day = np.timedelta64(1, "D")
    for blk in info["blocks"]:
        end = np.datetime64(pd.Timestamp(blk["end"]).tz_localize(None), "ns")
        near_end = (table["time_ns"].to_numpy() < end) & (table["time_ns"].to_numpy() + day > end + np.timedelta64(6, "h"))
        nxt = [b for b in info["blocks"] if b["start"] == blk["end"]]
        if nxt and nxt[0]["split"] != blk["split"]:
            assert table.loc[near_end, "peak24_flux"].isna().all()
    # under the peak24 label rule such frames are dropped instead
    table24, _ = assign_splits(raw, BuildConfig(split_by="week", buffer_days=0.5, label_rule="peak24"))
    assert len(table24) < len(table) and table24["peak24_flux"].notna().all()


@pytest.mark.parametrize(("cfg", "message"), [
    (dict(split_by="day", buffer_days=2.0), "not shorter than a day block"),
    (dict(split_by="fortnight"), "--split-by 'fortnight'"),
    (dict(buffer_days=-1.0), "--buffer-days -1"),
])
def test_bad_split_options_are_one_clear_error(cfg, message):
    with pytest.raises(FlaresynthError, match=message):
        BuildConfig(**cfg).validate()


def test_a_split_rule_that_leaves_a_split_empty_is_refused():
    with pytest.raises(FlaresynthError, match="a split would be empty"):
        assign_splits(frame_table(days=2), BuildConfig(split_by="day", buffer_days=0.1))


def test_rotation_blocks_are_carrington_rotations():
    edges = block_edges("rotation", np.datetime64("2024-05-01"), np.datetime64("2024-07-15"))
    lengths = np.diff(edges) / np.timedelta64(1, "D")
    assert np.allclose(lengths, 27.2753, atol=0.2)
    assert edges[0] <= np.datetime64("2024-05-01") < edges[1]
