"""drtk: find the refusal direction in chat LLMs, attack it, and rebuild refusal so it survives."""

__version__ = "0.1.0"
