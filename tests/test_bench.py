"""The benchmark's prompt set builds from the shipped seeds as the response step renders them (the
benchmark itself runs by hand: `make bench`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from prompt_set import bench_prompts  # noqa: E402


def test_the_prompt_set_is_fixed_and_varied():
    prompts = bench_prompts(70)
    assert len(prompts) == 70 and prompts == bench_prompts(70)
    assert all(p[-1]["role"] == "user" and p[-1]["content"].strip() for p in prompts)
    assert len({p[-1]["content"] for p in prompts}) > 40
