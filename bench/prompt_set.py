"""The benchmark's fixed prompts: instructions about the shipped seed passages, rendered exactly as
the response step renders an instruction, in a fixed order, with varied lengths."""

import json

from tasks.data.seeds import DEFAULT_SEEDS
from tasks.generate import build_messages
from tasks.respond import TEMPLATE

ASKS = [
    "Explain in simple terms: {s}",
    "Write a short quiz question and its answer about this fact: {s}",
    "Is the following statement accurate? Justify your answer. {s}",
    "Give a real-world example that illustrates this: {s}",
    "Summarize in one sentence: {s}",
    "What would a skeptic ask about this claim, and how would you answer? {s}",
]


def bench_prompts(count: int) -> list:
    """`count` chat prompts: each seed sentence with each kind of ask, cycling until enough."""
    passages = [json.loads(line)["context"] for line in DEFAULT_SEEDS.read_text().splitlines() if line]
    sentences = [s.strip() + "." for p in passages for s in p.split(". ") if len(s.split()) > 4]
    instructions = [ask.format(s=s) for i, s in enumerate(sentences) for ask in ASKS[i % 2 :: 2]]
    rows = [{"instruction": instructions[i % len(instructions)]} for i in range(count)]
    return [build_messages(row, TEMPLATE) for row in rows]
