"""The private torch ops the engine uses, and when it trusts them.

`torch.ops.mkldnn._reorder_linear_weight` and `_linear_pointwise` (with its `.binary` overload) are
what torch.compile's CPU weight freezing runs: oneDNN products with packed weights and a fused
element-wise step (`matmul.py`). They are not public API, so a torch release may rename them,
change their arguments or their results without notice. The engine uses them only on the torch
versions they were checked on (`KNOWN_GOOD`) and where a tiny product through them gives
`F.linear`'s result; elsewhere the projections take the public path, `F.linear`, and one INFO log
line says why.
"""

from __future__ import annotations

import functools
import logging
import re

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# (major, minor) bounds, inclusive: from the project's own floor (pyproject.toml) to the release the
# Makefile pins and the tests run on. Raise the upper bound after `pytest tests/engine` passes on a
# newer torch with INSTRUCTFORGE_MATMUL=onednn.
KNOWN_GOOD = ((2, 4), (2, 13))


def torch_version() -> tuple[int, int] | None:
    """torch's (major, minor), or None when its version string does not start with them."""
    found = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(found[1]), int(found[2])) if found else None


@functools.cache
def onednn_linear() -> bool:
    """Whether the packed oneDNN linear ops can be used here: torch within `KNOWN_GOOD`, built
    with oneDNN, the ops present, and a tiny product through each giving `F.linear`'s result."""
    if not torch.backends.mkldnn.is_available():
        return False  # a build without oneDNN: nothing private was going to run
    version, (low, high) = torch_version(), KNOWN_GOOD
    if version is None or not low <= version <= high:
        checked = f"{low[0]}.{low[1]}-{high[0]}.{high[1]}"
        why = f"torch {torch.__version__} is outside the versions they were checked on, {checked}"
    else:
        why = _tiny_product_fails()
    if why:
        log.info("Private oneDNN linear ops not used (%s): the projections run through F.linear.", why)
    return not why


def _tiny_product_fails() -> str:
    """Why the private ops fail on a 2x8 -> 4 product, or "" when they give F.linear's results."""
    mkldnn = torch.ops.mkldnn
    if not all(hasattr(mkldnn, name) for name in ("_reorder_linear_weight", "_linear_pointwise")):
        return "this torch has no such ops"
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 8, generator=generator), torch.randn(4, 8, generator=generator)
    bias, other = torch.randn(4, generator=generator), torch.randn(2, 4, generator=generator)
    expected = F.linear(x, weight, bias)
    try:
        with torch.inference_mode():
            packed = mkldnn._reorder_linear_weight(weight)
            got = mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
            added = mkldnn._linear_pointwise.binary(x, other, packed, bias, "add")
    except (RuntimeError, TypeError, AttributeError) as err:
        return f"a tiny product through them raised {type(err).__name__}"
    if not (torch.allclose(got, expected, atol=1e-5) and torch.allclose(added, expected + other, atol=1e-5)):
        return "a tiny product through them differs from F.linear's"
    return ""
