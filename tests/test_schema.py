"""Every flow writes one declared schema whatever the data: no `null` types, and two runs of a
flow (with and without a system prompt, with and without kept evolutions, one turn or several)
load together as one dataset."""

import json

import datasets
import pytest
from datasets import List, Value

from flows.generate import generate
from flows.instruct import instruct
from flows.magpie import magpie
from flows.self_instruct import self_instruct

FAKE = {"backend": "fake", "model": "fake"}


def has_null(feature) -> bool:
    if isinstance(feature, Value):
        return feature.dtype == "null"
    if isinstance(feature, List):
        return has_null(feature.feature)
    if isinstance(feature, dict):
        return any(has_null(f) for f in feature.values())
    return False


def saved_features(path):
    """The features of every copy a run writes: save_to_disk's and the Parquet shard's."""
    on_disk = datasets.load_from_disk(str(path / "dataset")).features
    parquet = datasets.load_dataset("parquet", data_files=str(path / "data" / "*.parquet"), split="train")
    assert on_disk == parquet.features
    return on_disk


def load_together(*paths):
    files = [str(p / "data" / "train-00000-of-00001.parquet") for p in paths]
    return datasets.load_dataset("parquet", data_files=files, split="train")


@pytest.mark.parametrize(
    "values, expected",
    [
        ([None, None], Value("string")),
        ([[], []], List(Value("string"))),
        ([1, None], Value("int64")),
        ([{"a": None}], {"a": Value("string")}),
        ([True], Value("bool")),
    ],
)
def test_an_undeclared_column_is_typed_from_its_values_and_never_null(values, expected):
    from tasks.data.schema import infer

    assert infer(values) == expected


def test_rows_without_a_declared_column_get_it_typed_and_defaulted():
    from tasks.data.schema import INSTRUCT, MAGPIE, features_for, to_dataset

    data = to_dataset([{"id": "a", "instruction": "Hi?"}], features_for("instruct", [{"id": "a"}]))
    assert data.features == INSTRUCT and not has_null(data.features)
    assert data[0]["grounded"] is False and data[0]["system_prompt"] is None and data[0]["evol_drops"] is None
    assert len(to_dataset([], MAGPIE)) == 0 and to_dataset([], MAGPIE).features == MAGPIE


@pytest.mark.usefixtures("prefect_server")
def test_instruct_runs_with_and_without_a_system_prompt_and_evolutions_load_together(tmp_path, fake):
    plain = instruct(**FAKE, num_instructions=2, num_evolutions=0, output_dir=tmp_path / "v1")
    prompted = instruct(**FAKE, num_instructions=2, system_prompt="Be brief.", output_dir=tmp_path / "v2")
    both = load_together(tmp_path / "v1", tmp_path / "v2")  # today: can't cast string to null
    assert len(both) == plain["rows"] + prompted["rows"] and not has_null(both.features)
    assert not has_null(saved_features(tmp_path / "v1"))
    assert {r["system_prompt"] for r in both} == {None, "Be brief."}


@pytest.mark.usefixtures("prefect_server")
def test_magpie_single_turn_multi_turn_and_only_instruction_runs_load_together(tmp_path, fake):
    magpie(**FAKE, num_rows=3, output_dir=tmp_path / "one")
    magpie(**FAKE, num_rows=3, n_turns=2, include_system_prompt=True, output_dir=tmp_path / "two")
    magpie(
        **FAKE,
        num_rows=3,
        only_instruction=True,
        system_prompt={"a": "You are A."},
        output_dir=tmp_path / "i",
    )
    paths = [tmp_path / "one", tmp_path / "two", tmp_path / "i"]
    rows = list(load_together(*paths))
    assert len(rows) == 9
    assert [bool(r["conversation"]) for r in rows] == [False] * 3 + [True] * 3 + [False] * 3
    assert all(r["instruction"] and r["response"] for r in rows[:3])
    assert all(r["system_prompt_key"] == "a" and r["response"] is None for r in rows[6:])


@pytest.mark.usefixtures("prefect_server")
def test_every_flow_writes_its_declared_schema(tmp_path, fake):
    from tasks.data.schema import GENERATE, INSTRUCT, MAGPIE, SELF_INSTRUCT

    instruct(**FAKE, num_instructions=2, output_dir=tmp_path / "instruct")
    magpie(**FAKE, num_rows=3, n_turns=2, output_dir=tmp_path / "magpie")
    self_instruct(**FAKE, num_instructions=3, output_dir=tmp_path / "self_instruct")
    generate(**FAKE, instruction=["ask about tides"], output_dir=tmp_path / "generate")
    declared = {"instruct": INSTRUCT, "magpie": MAGPIE, "self_instruct": SELF_INSTRUCT, "generate": GENERATE}
    for flow, features in declared.items():
        assert saved_features(tmp_path / flow) == features, flow  # no column left undeclared


@pytest.mark.usefixtures("prefect_server")
def test_generate_declares_its_columns_and_types_the_users_own_from_their_values(tmp_path, fake):
    rows = tmp_path / "rows.jsonl"
    records = [{"instruction": "ask about tides", "level": 2, "note": None}]
    rows.write_text("".join(json.dumps(r) + "\n" for r in records))
    template = "{{ seed_instruction }} (level {{ level }})"
    generate(**FAKE, rows=str(rows), prompt_template=template, output_dir=tmp_path / "out")
    features = saved_features(tmp_path / "out")
    assert features["level"] == Value("int64") and features["note"] == Value("string")
    assert features["system_prompt"] == Value("string") and not has_null(features)
