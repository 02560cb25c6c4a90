"""The dataset card: a README.md with Hugging Face YAML metadata (licence, pretty name, the
schema as `dataset_info`), written into every dataset directory. It states what produced the data
(flow, parameters, model, prompt templates), the counts, the quality summary and its plots, a
sample, and the papers of the techniques the run used, no others. Secrets never reach it: only the
flow's own parameters are shown, and none of them is a token; local paths are cut to their names."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

from tasks.data.report import evolutions_markdown, truncation_markdown
from tasks.pipeline import usage
from tasks.quality.metrics import generated, plot_names, quality_markdown
from tasks.templates.prompt_overrides import overrides_markdown

DEFAULT_LICENSE = "other"
PARQUET = "data/train-*.parquet"

PAPERS = {
    "self_instruct": (
        "Self-Instruct (Wang et al., 2022, arXiv:2212.10560)",
        """@article{wang2022selfinstruct,
  title={Self-Instruct: Aligning Language Models with Self-Generated Instructions},
  author={Wang, Yizhong and Kordi, Yeganeh and Mishra, Swaroop and Liu, Alisa and Smith, Noah A. and Khashabi, Daniel and Hajishirzi, Hannaneh},
  journal={arXiv preprint arXiv:2212.10560}, year={2022}
}""",
    ),
    "evol_instruct": (
        "Evol-Instruct / WizardLM (Xu et al., 2023, arXiv:2304.12244)",
        """@article{xu2023wizardlm,
  title={WizardLM: Empowering Large Language Models to Follow Complex Instructions},
  author={Xu, Can and Sun, Qingfeng and Zheng, Kai and Geng, Xiubo and Zhao, Pu and Feng, Jiazhan and Tao, Chongyang and Jiang, Daxin},
  journal={arXiv preprint arXiv:2304.12244}, year={2023}
}""",
    ),
    "magpie": (
        "Magpie (Xu et al., 2024, arXiv:2406.08464)",
        """@article{xu2024magpie,
  title={Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with Nothing},
  author={Xu, Zhangchen and Jiang, Fengqing and Niu, Luyao and Deng, Yuntian and Poovendran, Radha and Choi, Yejin and Lin, Bill Yuchen},
  journal={arXiv preprint arXiv:2406.08464}, year={2024}
}""",
    ),
}
# The stages of each paper's technique (the bootstrap is Self-Instruct's own loop).
PAPER_OF = {"self_instruct_bootstrap": "self_instruct", "magpie_response": "magpie"}


def papers(techniques: list[str]) -> list[str]:
    """The keys of PAPERS for the techniques a run used, in a stable order."""
    used = {PAPER_OF.get(t, t) for t in techniques}
    return [key for key in PAPERS if key in used]


def citations(techniques: list[str]) -> str:
    keys = papers(techniques)
    if not keys:
        return "The flow used basic prompting only; there is no technique paper to cite."
    names = "; ".join(PAPERS[k][0] for k in keys)
    return f"Techniques used: {names}.\n\n```bibtex\n" + "\n".join(PAPERS[k][1] for k in keys) + "\n```"


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def _sample(rows: list[dict[str, Any]], k: int = 3) -> str:
    shown = [json.dumps(generated(row), ensure_ascii=False, indent=2)[:1500] for row in rows[:k]]
    return "\n\n".join(f"```json\n{s}\n```" for s in shown) or "(no rows)"


def public(value: Any) -> Any:
    """`value` with every absolute local path cut to its last part: a card goes to the Hub, and
    where a file lay on this machine is nobody's business there."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    text = str(value) if isinstance(value, PurePath) else value
    if isinstance(text, str) and "\n" not in text and PurePath(text).is_absolute():
        return PurePath(text).name
    return text


def metadata(flow: str, summary: dict[str, Any], features: Any, license: str) -> str:
    """The card's YAML header, `dataset_info` included, as the Hub reads it."""
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        language=["en"],
        license=license,
        pretty_name=pretty_name(flow),
        size_categories=[size_category(summary.get("rows", 0))],
        task_categories=["text-generation"],
        tags=["synthetic", "instructforge", flow],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET}]}],
    )
    DatasetInfosDict({"default": DatasetInfo(features=features)}).to_dataset_card_data(data)
    return data.to_yaml()


def pretty_name(flow: str) -> str:
    return f"Synthetic instruction data ({flow})"


def _chat_template(summary: dict[str, Any]) -> str:
    """Which chat template a run rendered raw prompts with (Magpie), and where it was found."""
    found = summary.get("chat_template")
    return f"\nChat template: `{found['name']}`, from {found['source']}.\n" if found else ""


def render_card(
    flow: str,
    parameters: dict[str, Any],
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    features: Any = None,
    license: str = DEFAULT_LICENSE,
) -> str:
    """The card's markdown text for a dataset `flow` produced with `parameters`; `features` is
    the data's schema (default: the flow's, for these rows)."""
    from tasks.data.schema import features_for

    features = features or features_for(flow, rows)
    templates = sorted({public(t) for row in rows for t in row.get("templates") or []})
    drops = "\n".join(f"| {reason} | {count} |" for reason, count in summary.get("drops", {}).items())
    stages = "\n".join(f"| {stage} | {count} |" for stage, count in summary.get("rows_per_stage", {}).items())
    params = json.dumps(public(parameters), indent=2, default=str, sort_keys=True)
    quality = summary.get("quality") or {}
    plots = "\n\n".join(f"![{name}]({name})" for name in plot_names(quality))
    counts = "".join(f"{c}\n\n" for c in (evolutions_markdown(summary), truncation_markdown(summary)) if c)
    columns = ", ".join(f"`{c}`" for c in features)
    return f"""---
{metadata(flow, summary, features, license).strip()}
---

# {pretty_name(flow)}

{summary.get("rows", 0)} rows generated by the `{flow}` flow of instructforge with the model
`{public(parameters.get("model"))}` (backend `{parameters.get("backend")}`). Columns: {columns}.
Every row carries its provenance: the model, the techniques and prompt templates that made it,
and their generation parameters (`generation`, JSON).

## How it was made

Flow parameters:

```json
{params}
```

Prompt templates: {", ".join(f"`{t}`" for t in templates) or "none"}.
{_chat_template(summary)}

{overrides_markdown(summary)}

## Counts

| stage | kept |
|---|---|
{stages}

{counts}Dropped generations, by stage and reason (`drops.jsonl` has each one):

| reason | count |
|---|---|
{drops or "| none | 0 |"}

Rows that failed with errors: {summary.get("failures", 0)}.

{quality_markdown(quality) if quality else ""}

{plots}

{usage.markdown(summary.get("usage", {}))}

## Sample

{_sample(rows)}

## License

`{license}`. Text a model writes is subject to that model's terms (`{public(parameters.get("model"))}`),
and rows made from seed data to the seeds' licence: check both. The flow's `license` parameter
sets this field (default `{DEFAULT_LICENSE}`: no claim is made for you).

## Citations

{citations(summary.get("techniques") or [])}
"""
