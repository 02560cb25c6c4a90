"""Whether the Hugging Face Hub answers at all, asked with one TCP connect: where it cannot be
reached, its client retries every request for ~25 s before it gives up."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit


def hub_reachable(timeout: float = 3.0) -> bool:
    """A connection to the Hub's endpoint (`HF_ENDPOINT`, its scheme's port unless it names one)
    opens within `timeout` seconds; False at once under `HF_HUB_OFFLINE`."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        socket.create_connection((endpoint.hostname or "", port), timeout=timeout).close()
        return True
    except (OSError, ValueError):  # refused, unresolvable, silent; or a malformed port
        return False
