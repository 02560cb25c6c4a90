"""Magpie's pre-query derivation on real chat templates: SmolLM2's (the embedded model) and four
families built here as tiny tokenizers with their real templates (no downloads), plus the parser
of generated user turns."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tasks.backends import Generation
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.backends.fake import FakeBackend
from tasks.backends.transformers_backend import resolve_model
from tasks.magpie import check_user_turn, pre_query_template, reply_prompt
from tasks.templates.chat_templates import chat_template_for, resolve

CHATML = chat_template_for(FakeBackend())  # the fake backend publishes ChatML

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)
# Phi-3-mini's first template: every user message is followed by an (empty) assistant header.
PHI3 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'system') %}"
    "{{'<|system|>' + '\n' + message['content'] + '<|end|>' + '\n'}}{% elif (message['role'] == "
    "'user') %}{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + "
    "'\n'}}{% elif message['role'] == 'assistant' %}{{message['content'] + '<|end|>' + '\n'}}"
    "{% endif %}{% endfor %}"
)


def tiny_tokenizer(template, bos, eos, specials):
    """A word-level tokenizer with a family's special tokens and chat template."""
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate("hi hello be brief".split())}}
    model = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token=bos, eos_token=eos, unk_token="[UNK]", extra_special_tokens=specials
    )
    tokenizer.chat_template = template
    return tokenizer


FAMILIES = {
    "llama3": tiny_tokenizer(
        LLAMA3, "<|begin_of_text|>", "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>"]
    ),
    "gemma": tiny_tokenizer(GEMMA, "<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "mistral": tiny_tokenizer(MISTRAL, "<s>", "</s>", []),
    "phi3": tiny_tokenizer(
        PHI3, "<s>", "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    ),
}
SYSTEM = "Be brief."
HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
# family: (no system prompt, with SYSTEM, turn 2 after HISTORY, stop strings)
EXPECTED = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n",
        ("<|eot_id|>",),
    ),
    "gemma": (
        "<bos><start_of_turn>user\n",
        "<bos><start_of_turn>user\nBe brief.\n\n",  # no system role: it opens the user turn
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\n",
        ("<end_of_turn>", "<eos>"),
    ),
    "mistral": (
        "<s>[INST] ",
        "<s>[INST] Be brief.\n\n",
        "<s>[INST] Hi [/INST]Hello!</s>[INST] ",
        ("[/INST]", "</s>"),
    ),
    "phi3": (
        "<s><|user|>\n",
        "<s><|system|>\nBe brief.<|end|>\n<|user|>\n",
        "<s><|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\n",
        ("<|end|>", "<|endoftext|>"),
    ),
}


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(EMBEDDED_MODEL))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pre_query_prompts_of_chat_template_families(family):
    tokenizer = FAMILIES[family]
    bare, system, turn2, stop = EXPECTED[family]
    assert pre_query_template(tokenizer).prompt == bare
    assert pre_query_template(tokenizer, SYSTEM).prompt == system
    assert pre_query_template(tokenizer, history=HISTORY).prompt == turn2
    assert pre_query_template(tokenizer).stop == stop
    assert pre_query_template(tokenizer, SYSTEM, HISTORY).stop == stop
    assert pre_query_template(tokenizer, SYSTEM).system_merged == (family in ("gemma", "mistral"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_later_turn_has_one_bos_token(family):
    tokenizer = FAMILIES[family]
    prompt = pre_query_template(tokenizer, SYSTEM, HISTORY).prompt
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_smollm2_pre_query_keeps_its_default_system_prompt_once(smollm2):
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    query = pre_query_template(smollm2)
    assert query.prompt == f"<|im_start|>system\n{default}<|im_end|>\n<|im_start|>user\n"
    assert query.template_system_prompt == default and query.stop == ("<|im_end|>",)
    with_system = pre_query_template(smollm2, SYSTEM).prompt
    assert with_system == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    turn2 = pre_query_template(smollm2, history=HISTORY).prompt
    assert turn2 == (
        f"<|im_start|>system\n{default}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n"
    )
    assert turn2.count(default) == 1


def test_a_model_id_gives_the_same_derivation_as_its_tokenizer(smollm2):
    assert pre_query_template(EMBEDDED_MODEL, SYSTEM) == pre_query_template(smollm2, SYSTEM)
    assert pre_query_template(CHATML).prompt == "<|im_start|>user\n"


def test_an_explicit_chat_template_replaces_the_models(smollm2, tmp_path):
    path = tmp_path / "llama3.jinja"
    path.write_text(LLAMA3)
    query = pre_query_template(smollm2, chat_template=str(path))
    assert query.prompt == "<|im_start|><|start_header_id|>user<|end_header_id|>\n\n"  # SmolLM2's BOS


def test_the_response_prompt_is_the_normal_chat_template():
    conversation = [{"role": "user", "content": "Hi"}]
    gemma = reply_prompt(resolve(FAMILIES["gemma"]), SYSTEM, conversation)
    assert gemma == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert (
        reply_prompt(CHATML, None, conversation) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    "template, message",
    [
        (None, "has no chat template"),
        ("{{ messages | length }}", "does not write a user message verbatim"),
        ("no-such-file.jinja", "neither Jinja text nor an existing file"),
    ],
)
def test_unusable_templates_fail_with_the_fix(template, message):
    tokenizer = tiny_tokenizer(None, "<s>", "</s>", [])
    with pytest.raises(ValueError, match=message):
        pre_query_template(tokenizer, chat_template=template)


def test_history_must_alternate_and_end_with_the_assistant():
    with pytest.raises(ValueError, match="alternate user/assistant"):
        pre_query_template(CHATML, history=[{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize(
    "text, finish, reason",
    [
        ("How do I keep basil alive on a windowsill?", "stop", None),
        ("I need a short speech for my sister's wedding.", "stop", None),
        ("", "stop", "empty"),
        ("  \n ", "stop", "empty"),
        ("assistant\nSure, here is how.", "stop", "echo_of_template"),
        ("What is <|im_start|> used for in chat?", "stop", "echo_of_prompt"),
        ("You are a helpful AI assistant named SmolLM, trained by Hugging Face", "stop", "echo_of_prompt"),
        ("!!! ??? ### *** !!!", "stop", "empty"),
        ("why why why why why why why why", "stop", "degenerate"),
        ("Explain how tides work and then tell me about the moon and", "length", "no_end_of_turn"),
        ("Hello there", "stop", "too_short"),
        ("", "prompt_too_long", "prompt_too_long"),
    ],
)
def test_user_turns_are_parsed_forgivingly_and_dropped_with_reasons(text, finish, reason, smollm2):
    template = resolve(smollm2)
    assert check_user_turn(Generation(text, finish), None, template) == reason


def test_a_template_that_silently_drops_the_system_role_gets_it_in_the_user_turn():
    drops_system = (
        "{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n"
        "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    )
    query = pre_query_template(CHATML.model_copy(update={"source": drops_system}), SYSTEM)
    assert query.prompt == "<|im_start|>user\nBe brief.\n\n" and query.system_merged


def test_duplicates_are_found_by_opening_query_in_instruction_rows_and_conversations():
    from tasks.rows import drop_duplicates

    rows = [
        {"id": "a", "instruction": "Why is the sea salty?"},
        {
            "id": "b",
            "conversation": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "why is the sea  salty"},
                {"role": "assistant", "content": "Rivers."},
            ],
        },
        {"id": "c", "conversation": [{"role": "user", "content": "How do tides work?"}]},
    ]
    kept, drops = drop_duplicates(rows)
    assert [r["id"] for r in kept] == ["a", "c"]
    assert [(d["row_id"], d["reason"], d["text"]) for d in drops] == [
        ("b", "duplicate", "why is the sea  salty")
    ]
