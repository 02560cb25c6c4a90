"""Scheduled refreshes: a `latest` pointer to the newest good version, and a retention limit."""

import json
from datetime import datetime, timedelta, timezone
from itertools import count

import datasets
import pytest

from flows.instruct import instruct
from tasks.data import publish
from tasks.data.dataset import versioned_dir
from tasks.data.versions import LATEST, VERSION, latest, point_latest, prune, versions

SMALL = {"backend": "fake", "model": "fake", "num_instructions": 2, "num_evolutions": 0}


@pytest.fixture
def one_second_apart(monkeypatch):
    """Each versioned save a second after the previous (runs here finish within one second)."""
    ticks, start = count(), datetime(2026, 1, 1, tzinfo=timezone.utc)
    monkeypatch.setattr(
        publish, "versioned_dir", lambda out: versioned_dir(out, start + timedelta(seconds=next(ticks)))
    )


@pytest.mark.usefixtures("prefect_server", "one_second_apart")
def test_refreshes_point_latest_at_the_newest_and_keep_the_newest_n(tmp_path, fake):
    out = tmp_path / "refresh"
    summaries = [instruct(**SMALL, output_dir=out, versioned=True, keep_versions=2) for _ in range(3)]
    names = [v.name for v in versions(out)]
    assert names == ["2026-01-01T000001Z", "2026-01-01T000002Z"]  # the oldest was deleted
    assert (out / LATEST).is_symlink() and latest(out).name == names[-1]
    assert str(latest(out)) == summaries[-1]["output_dir"]
    loaded = datasets.load_dataset(str(out / LATEST), split="train")
    assert len(loaded) == summaries[-1]["rows"]


@pytest.mark.usefixtures("prefect_server", "one_second_apart")
def test_without_keep_versions_every_version_stays(tmp_path, fake):
    out = tmp_path / "refresh"
    for _ in range(3):
        instruct(**SMALL, output_dir=out, versioned=True)
    assert len(versions(out)) == 3 and latest(out) == versions(out)[-1]


def fake_version(root, name, rows):
    path = root / name
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"rows": rows}))
    return path


def test_latest_does_not_move_to_a_version_with_far_fewer_rows(tmp_path):
    good = fake_version(tmp_path, "2026-01-01T000000Z", 100)
    assert point_latest(good, 100) is None and latest(tmp_path) == good
    poor = fake_version(tmp_path, "2026-01-02T000000Z", 10)
    assert "still points to 2026-01-01T000000Z" in point_latest(poor, 10)
    assert latest(tmp_path) == good
    fair = fake_version(tmp_path, "2026-01-03T000000Z", 80)
    assert point_latest(fair, 80) is None and latest(tmp_path) == fair
    assert (tmp_path / LATEST).readlink().name == fair.name  # relative: the tree can move


def test_retention_never_deletes_the_version_latest_points_to(tmp_path):
    good = fake_version(tmp_path, "2026-01-01T000000Z", 100)
    point_latest(good, 100)
    for day in (2, 3, 4):
        fake_version(tmp_path, f"2026-01-0{day}T000000Z", 1)
    assert prune(tmp_path, 1) == ["2026-01-02T000000Z", "2026-01-03T000000Z"]
    assert [v.name for v in versions(tmp_path)] == ["2026-01-01T000000Z", "2026-01-04T000000Z"]


def test_keep_versions_must_be_at_least_one():
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="keep_versions"):
        instruct.validate_parameters({"keep_versions": 0})


def test_a_version_saved_in_the_same_second_takes_the_next_free_name(tmp_path):
    when = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    first = versioned_dir(tmp_path, when)
    first.mkdir()
    second = versioned_dir(tmp_path, when)
    assert first.name == "2026-01-01T120000Z" and second.name == "2026-01-01T120001Z"
    assert VERSION.fullmatch(second.name)  # still a version's name to `latest` and the retention
