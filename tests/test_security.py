"""Security: remote code stays off unless asked for, user templates are sandboxed, and the Hub token
never leaves the environment (not in logs, task parameters, persisted results or the dataset)."""

import pytest
from jinja2.exceptions import SecurityError

from flows.instruct import instruct
from tasks.backends.transformers_backend import trust_remote_code
from tasks.templates import prompts

SECRET = "hf_SECRETsentinel0123456789"


def test_trust_remote_code_is_off_unless_turned_on(monkeypatch):
    monkeypatch.delenv("INSTRUCTFORGE_TRUST_REMOTE_CODE", raising=False)
    assert trust_remote_code() is False
    monkeypatch.setenv("INSTRUCTFORGE_TRUST_REMOTE_CODE", "1")
    assert trust_remote_code() is True


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.environ }}",
        "{{ row.__class__.__init__.__globals__ }}",
    ],
)
def test_templates_cannot_reach_python_internals(template):
    with pytest.raises(SecurityError):
        prompts.environment().from_string(template).render(row={}, cycler=object())


@pytest.mark.usefixtures("prefect_server")
def test_the_hub_token_never_reaches_logs_results_or_data(
    tmp_path, monkeypatch, capfd, caplog, result_storage, fake
):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    instruct(backend="fake", model="fake", num_instructions=2, output_dir=tmp_path / "out")
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text
    for directory in (result_storage, tmp_path / "out"):
        files = [p for p in directory.rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert SECRET.encode() not in path.read_bytes(), path
