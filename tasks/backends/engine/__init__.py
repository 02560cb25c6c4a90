"""The continuous-batching inference engine behind the transformers backend: many rows decode
together in slots of one KV cache, with C kernels for the decode step where they measured faster.

Its public surface is what the transformers backend uses; everything else is internal."""

from tasks.backends.engine.decode import supports
from tasks.backends.engine.requests import Request
from tasks.backends.engine.sampling import RowSampler
from tasks.backends.engine.scheduler import Engine
from tasks.backends.engine.threads import on_own_thread

__all__ = ["Engine", "Request", "RowSampler", "on_own_thread", "supports"]
