"""Loading chat models as hooked TransformerLens 4 models."""

from drtk.models.chat import ChatFormat, chat_format_from_tokenizer
from drtk.models.embedded import EMBEDDED_NAME, cache_dir, embedded_model_dir
from drtk.models.loading import DEFAULT_MODEL, load_model
from drtk.models.model import Batch, ChatModel
from drtk.models.saving import hf_state_dict, save_pretrained
from drtk.models.tiny import TINY_MODEL_NAME

__all__ = [
    "Batch", "ChatFormat", "ChatModel", "DEFAULT_MODEL", "EMBEDDED_NAME", "TINY_MODEL_NAME",
    "cache_dir", "chat_format_from_tokenizer", "embedded_model_dir", "hf_state_dict", "load_model", "save_pretrained",
]
