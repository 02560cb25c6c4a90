"""Techniques for synthetic instruction data, as Prefect tasks around one model seam.

Importing this package sets quiet defaults for the Hugging Face libraries (each only when the user
has not set it; see tasks/pipeline/settings.py). Prefect's settings are in prefect.toml.
"""

from tasks.pipeline import settings as _settings

_settings.apply_defaults()
