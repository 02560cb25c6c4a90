import pytest

from tasks.templates import prompts


def test_render_fills_variables():
    text = prompts.render("self_instruct.jinja", context="Bees dance.", num_instructions=3)
    assert "Bees dance." in text and "3" in text


def test_missing_variable_is_an_error_naming_it():
    with pytest.raises(ValueError, match="num_instructions"):
        prompts.render("self_instruct.jinja", context="Bees dance.")


def test_unknown_template_is_an_error():
    with pytest.raises(ValueError, match="No prompt template"):
        prompts.render("nope.jinja")


def test_mutation_templates_extend_the_in_depth_base():
    text = prompts.render("evol_instruct/constraints.jinja", instruction="Name a river.")
    assert "Prompt Rewriter" in text and "constraint" in text and text.endswith("#Rewritten Prompt#:")


def test_source_includes_the_base_template():
    # Editing the shared in-depth base must change every mutation's cache key.
    assert "Prompt Rewriter" in prompts.source("evol_instruct/deepening.jinja")


def test_templates_render_in_a_sandbox():
    env = prompts.environment()
    template = env.from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception, match="unsafe|not safely|access"):
        template.render()
