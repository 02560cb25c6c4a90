"""Where Magpie's chat template comes from on a backend without a tokenizer, never guessed:
`--chat-template`, what the server publishes (a llama.cpp-style `/props`), the tokenizer of the
model path the server reports (vLLM's `/v1/models` `root`), else one error line. Against a
stand-in server on loopback (tests/openai_stand_in.py): the steps a real server in CI cannot show."""

import json

import pytest

from flows.magpie import check_inputs, magpie
from tasks.backends.embedded import embedded_model_dir
from tasks.backends.openai_backend import ChatOnlyServer
from tasks.pipeline.cli import main
from tasks.pipeline.parameters import Model, Output
from tasks.templates.chat_templates import chat_template_for
from tests.openai_stand_in import StandIn
from tests.test_magpie import EXPECTED, LLAMA3

LLAMA3_PROPS = {"chat_template": LLAMA3, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def check(server, tmp_path, **kwargs):
    return check_inputs(
        Model(model=server.model, backend="openai"), Output(output_dir=tmp_path / "out"), **kwargs
    )


def test_a_server_that_publishes_no_template_stops_the_run_with_one_line(tmp_path):
    # Today's defect: ChatML was assumed, and a Llama 3 model got another family's prompt.
    with StandIn("some-org/not-on-this-machine") as server:
        with pytest.raises(ValueError, match="--chat-template") as err:
            check(server, tmp_path)
        assert server.posts("/v1/completions") == []  # nothing was generated
    message = str(err.value)
    assert "\n" not in message and "publishes none" in message and "/props: 404" in message
    assert "not-on-this-machine" in message


def test_the_cli_says_it_in_one_line_without_a_traceback(tmp_path, capsys):
    with StandIn("some-org/not-on-this-machine") as server:
        args = ["--backend", "openai", "--model", server.model, "--output-dir", str(tmp_path / "o")]
        with pytest.raises(SystemExit):
            main(magpie, args, preflight=check_inputs)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--chat-template" in err and "Traceback" not in err


def test_a_template_published_at_props_is_used_with_its_special_tokens(tmp_path):
    with StandIn("llama", props=LLAMA3_PROPS) as server:
        template = check(server, tmp_path)
    assert template.origin == f"{server.root}/props"
    from tasks.magpie import pre_query_template

    query = pre_query_template(template)
    assert query.prompt == EXPECTED["llama3"][0] and query.stop == EXPECTED["llama3"][3]


def test_the_tokenizer_of_the_path_a_vllm_server_reports_is_read_offline(tmp_path):
    model_dir = str(embedded_model_dir())
    with StandIn("alias", models_root=model_dir) as server:
        template = check(server, tmp_path)
    assert template.origin == f"tokenizer of the local directory {model_dir}"
    assert "<|im_start|>" in template.control_tokens and template.eos_token == "<|im_end|>"


@pytest.mark.parametrize(
    "path, answer",
    [
        ("/info", {"model_id": "{dir}"}),
        ("/get_model_info", {"model_path": "{dir}", "tokenizer_path": "{dir}"}),
    ],
    ids=["tgi", "sglang"],
)
def test_the_model_path_tgi_and_sglang_report_leads_to_its_tokenizer(tmp_path, path, answer):
    model_dir = str(embedded_model_dir())
    pages = {path: {k: v.format(dir=model_dir) for k, v in answer.items()}}
    with StandIn("alias", pages=pages) as server:
        assert check(server, tmp_path).origin == f"tokenizer of the local directory {model_dir}"


def test_chat_template_flag_wins_and_says_so(tmp_path):
    with StandIn("llama", props=LLAMA3_PROPS) as server:
        template = check(server, tmp_path, chat_template=EXPECTED_CHATML)
    assert template.origin == "--chat-template" and template.source == EXPECTED_CHATML
    assert set(template.control_tokens) == {"<|im_start|>", "<|im_end|>"}  # read from the text


EXPECTED_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_chat_only_server_is_refused_in_one_line_and_never_sent_a_chat_wrapped_prompt(tmp_path):
    with StandIn("llama", props=LLAMA3_PROPS, chat_only=True) as server:
        with pytest.raises(ChatOnlyServer, match="takes chat messages only") as err:
            check(server, tmp_path)
        assert server.posts("/v1/chat/completions") == []
        # and a run that got past the check still never wraps a pre-query prompt in a chat turn
        with pytest.raises(ChatOnlyServer):
            from tasks.backends import GenerationParams, get_backend

            get_backend("openai", server.model).generate(["<|start_header_id|>user"], GenerationParams())
        assert server.posts("/v1/chat/completions") == []
    assert "\n" not in str(err.value)


def test_the_fake_backend_publishes_chatml_or_nothing():
    from tasks.backends import get_backend

    assert chat_template_for(get_backend("fake", "fake")).origin == "fake backend (ChatML)"
    with pytest.raises(ValueError, match="--chat-template"):
        chat_template_for(get_backend("fake", "fake?template=none"))


@pytest.mark.usefixtures("prefect_server")
def test_magpie_through_a_props_server_records_the_template_and_its_source(tmp_path):
    with StandIn("llama", props=LLAMA3_PROPS) as server:
        summary = magpie(
            backend="openai", model=server.model, num_rows=4, max_rounds=1, output_dir=tmp_path / "out"
        )
        users = [b for b in server.posts("/v1/completions") if b["prompt"] == EXPECTED["llama3"][0]]
    assert len(users) == 4 and all(b["stop"] == ["<|eot_id|>"] for b in users)
    rows = [json.loads(line) for line in open(tmp_path / "out" / "data.jsonl")]
    assert rows and {r["chat_template_source"] for r in rows} == {f"{server.root}/props"}
    assert summary["chat_template"]["source"] == f"{server.root}/props"
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"from {server.root}/props" in card and summary["chat_template"]["name"] in card


def hub_cache_with_tokenizer(root, repo_id: str) -> None:
    """A Hugging Face cache holding `repo_id`'s tokenizer files and config (the embedded model's),
    no weights."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(snapshot.name)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (snapshot / name).write_bytes((embedded_model_dir() / name).read_bytes())


def test_a_served_hub_id_is_read_from_the_hugging_face_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub_cache_with_tokenizer(tmp_path / "hub", "some-org/Chat-1B-Instruct")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with StandIn("some-org/Chat-1B-Instruct") as server:
        template = check(server, tmp_path)
    assert template.origin == "tokenizer of some-org/Chat-1B-Instruct (Hugging Face cache)"
    assert template.eos_token == "<|im_end|>"
