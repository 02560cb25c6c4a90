"""The private oneDNN ops run only where they were checked: a torch outside `KNOWN_GOOD`, a torch
without the ops, or ops that raise or compute something else leave the projections on the public
`F.linear`, with one INFO line saying why; the results stay the modules'."""

import logging
import types

import pytest
import torch

from tasks.backends.engine import private_ops
from tasks.backends.engine.matmul import Projections


@pytest.fixture(autouse=True)
def fresh_check():
    """`onednn_linear` is decided once per process: each test decides anew, and leaves no verdict."""
    private_ops.onednn_linear.cache_clear()
    yield
    private_ops.onednn_linear.cache_clear()


@pytest.fixture
def needs_onednn():
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")


def _raises(*args, **kwargs):
    raise RuntimeError("no kernel for this layout")


class _ZeroLinear:
    """A `_linear_pointwise` (and its `.binary`) that returns zeros: an op whose meaning changed."""

    def __call__(self, x, w, b, attr, scalars, algorithm):
        return torch.zeros(len(x), len(w))

    def binary(self, x, other, w, b, attr):
        return torch.zeros(len(x), len(w))


def _fake_ops(**ops):
    mkldnn = {"_reorder_linear_weight": lambda w: w, "_linear_pointwise": _ZeroLinear(), **ops}
    return types.SimpleNamespace(mkldnn=types.SimpleNamespace(**mkldnn))


def projections_on_onednn(monkeypatch) -> tuple[Projections, torch.nn.Linear]:
    monkeypatch.setenv("INSTRUCTFORGE_MATMUL", "onednn")
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    model = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    return Projections(model, [layer]), layer


def test_the_ops_run_on_a_checked_torch(needs_onednn, monkeypatch, caplog):
    if private_ops.torch_version() > private_ops.KNOWN_GOOD[1]:
        pytest.skip("this torch is newer than the versions checked")
    with caplog.at_level(logging.INFO, logger="tasks.backends.engine"):
        projections, layer = projections_on_onednn(monkeypatch)
    assert private_ops.onednn_linear() and projections.packed and not caplog.records


@pytest.mark.parametrize(
    "case,why",
    [
        ("newer torch", "outside the versions they were checked on, 2.4-2.13"),
        ("older torch", "outside the versions they were checked on"),
        ("no such ops", "has no such ops"),
        ("ops raise", "raised RuntimeError"),
        ("ops compute something else", "differs from F.linear's"),
    ],
)
def test_outside_what_was_checked_the_projections_use_f_linear(needs_onednn, monkeypatch, caplog, case, why):
    if case == "newer torch":
        monkeypatch.setattr(private_ops.torch, "__version__", "2.14.0")
    elif case == "older torch":
        monkeypatch.setattr(private_ops.torch, "__version__", "2.3.1+cpu")
    elif case == "no such ops":
        monkeypatch.setattr(private_ops.torch, "ops", types.SimpleNamespace(mkldnn=types.SimpleNamespace()))
    elif case == "ops raise":
        monkeypatch.setattr(private_ops.torch, "ops", _fake_ops(_reorder_linear_weight=_raises))
    else:
        monkeypatch.setattr(private_ops.torch, "ops", _fake_ops())
    with caplog.at_level(logging.INFO, logger="tasks.backends.engine"):
        projections, layer = projections_on_onednn(monkeypatch)
        assert not private_ops.onednn_linear()  # decided once: no second line
    said = [r for r in caplog.records if r.name == private_ops.__name__]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert why in said[0].getMessage() and "F.linear" in said[0].getMessage()
    assert projections.packed == {} and projections.kernel is None
    x = torch.randn(3, 16)
    with torch.inference_mode():
        assert torch.equal(projections(layer, x), layer(x))
        assert torch.equal(projections.plus(layer, x, x[:, :8]), x[:, :8] + layer(x))
