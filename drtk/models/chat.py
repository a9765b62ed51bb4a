"""Chat formatting from the tokenizer's own template, and the post-instruction tokens it implies.

Arditi et al. read the refusal direction at the *post-instruction* positions: the template tokens that
follow the user's instruction and open the assistant turn (``<|im_end|>\\n<|im_start|>assistant\\n`` in
ChatML). drtk derives them from the template itself by rendering a conversation around a sentinel and
keeping what comes after it, so no model family is hard-coded.
"""

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from drtk.errors import ChatTemplateError, prompt_list

logger = logging.getLogger(__name__)

_SENTINEL = "\u2063DRTK_INSTRUCTION\u2063"


@dataclass(frozen=True)
class ChatFormat:
    """How a model's chat template frames one user instruction.

    Attributes:
        prefix: text before the instruction (system prompt, user header).
        suffix: text after the instruction up to where the assistant's answer begins.
        post_instruction_ids: token ids of ``suffix`` as they appear in context.
        system_prompt: the system prompt passed to the template (None: the template's default).
    """

    prefix: str
    suffix: str
    post_instruction_ids: tuple[int, ...]
    system_prompt: "str | None" = None

    @property
    def n_post(self) -> int:
        return len(self.post_instruction_ids)

    def format(self, instruction: str, prefill: str = "") -> str:
        """The full prompt text for one instruction, optionally with the assistant turn started."""
        return f"{self.prefix}{instruction}{self.suffix}{prefill}"

    def format_many(self, instructions: Sequence[str], prefills: "Sequence[str] | None" = None) -> list[str]:
        instructions = prompt_list(instructions, "instructions")
        if prefills is None:
            return [self.format(i) for i in instructions]
        if len(prefills) != len(instructions):
            raise ValueError(f"got {len(prefills)} prefills for {len(instructions)} instructions")
        return [self.format(i, p) for i, p in zip(instructions, prefills)]


def chat_format_from_tokenizer(
    tokenizer: Any, *, chat_template: "str | None" = None, system_prompt: "str | None" = None
) -> ChatFormat:
    """Derive the :class:`ChatFormat` from ``tokenizer.chat_template`` (or ``chat_template``).

    Raises:
        ChatTemplateError: no template, a template that drops the instruction, or one whose
            post-instruction tokens do not survive tokenisation in context.
    """
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        name = getattr(tokenizer, "name_or_path", "this tokenizer")
        raise ChatTemplateError(
            f"{name!r} has no chat template, so drtk cannot tell where the instruction ends and the "
            "assistant turn begins. Pass one: load_model(..., chat_template='<Jinja string>') or "
            "`drtk ... --chat-template FILE` (a base model without chat training is rarely what you want)."
        )
    messages = [{"role": "user", "content": _SENTINEL}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=template
        )
    except Exception as err:  # jinja errors come in many types
        raise ChatTemplateError(f"the chat template failed to render a user message: {err}") from err
    if text.count(_SENTINEL) != 1:
        raise ChatTemplateError("the chat template does not place the user's message exactly once in its output")
    prefix, suffix = text.split(_SENTINEL)
    if not suffix:
        raise ChatTemplateError("the chat template adds nothing after the instruction (no assistant header)")
    # Tokenise in context and keep the tail that belongs to the suffix: BPE may merge across the
    # boundary, so check the standalone tokenisation against the tail of the full one.
    probe = f"{prefix}Hello there{suffix}"
    full = tokenizer(probe, add_special_tokens=False)["input_ids"]
    alone = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    if not alone or full[-len(alone):] != alone:
        raise ChatTemplateError(
            f"the template's post-instruction text {suffix!r} tokenises differently in context; "
            "drtk needs it as a clean token suffix to read activations at those positions"
        )
    return ChatFormat(prefix=prefix, suffix=suffix, post_instruction_ids=tuple(alone), system_prompt=system_prompt)
