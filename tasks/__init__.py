"""Techniques for synthetic instruction data, as Prefect tasks around one model seam.

Importing this package first sets quiet, load-tolerant defaults for Prefect and Hugging Face
(each only when the user has not set it), so it must be imported before `prefect`.
"""

from tasks.pipeline import settings as _settings

_settings.apply_defaults()
