"""`ChatModel`: a TransformerLens 4 ``TransformerBridge`` plus what drtk needs around it."""

import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from drtk._types import Site
from drtk.errors import DrtkError
from drtk.models.chat import ChatFormat

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """Left-padded token batch. ``position_ids`` restart at 0 on each row's first real token."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def to(self, device: "torch.device | str") -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _any_hook(modules: Sequence[torch.nn.Module], native: "set[int] | frozenset[int]" = frozenset()) -> bool:
    """Whether any of ``modules`` carries a hook, besides the capture hooks bridge blocks install on themselves
    and the ``native`` ones (handle ids of :meth:`ChatModel.hooks`' PyTorch hooks, which hold with or
    without the bridge)."""
    own = {h.id for m in modules for h in getattr(m, "_capture_hook_handles", ())} | set(native)
    return any(key not in own for m in modules
               for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
               for key in hooks)


def _input_hook(fn: Any, point: Any, active: Any) -> Any:
    """A forward pre-hook (with kwargs) that passes a module's hidden-states input through ``fn`` while
    ``active()``."""
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> "tuple[tuple, dict] | None":
        if not active():
            return None
        if "hidden_states" in kwargs:
            new = fn(kwargs["hidden_states"], point)
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        new = fn(args[0], point)
        return None if new is None else ((new, *args[1:]), kwargs)

    return hook


def _output_hook(fn: Any, point: Any, active: Any) -> Any:
    """A forward hook that passes a module's output (the first element of a tuple) through ``fn`` while
    ``active()``."""
    def hook(module: torch.nn.Module, args: tuple, output: Any) -> Any:
        if not active():
            return None
        first = output[0] if isinstance(output, tuple) else output
        new = fn(first, point)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


class StopForward(Exception):
    """Raised by a hook to end a forward pass early once everything needed has been read."""


@dataclass(eq=False)
class ChatModel:
    """A hooked chat model.

    Attributes:
        bridge: the TransformerLens ``TransformerBridge``; its hook points (``blocks.{l}.hook_resid_pre``
            and friends) are where drtk reads and edits activations.
        tokenizer: the Hugging Face tokenizer.
        chat: the chat format derived from the tokenizer's template.
        model_id: the name or path the model was loaded from (recorded in every artifact).
    """

    bridge: Any
    tokenizer: Any
    chat: ChatFormat
    model_id: str
    _hook_names: frozenset = field(default_factory=frozenset, repr=False)
    _native: set = field(default_factory=set, repr=False)  # handle ids of the live PyTorch hooks `hooks()` put in
    _targets: dict = field(default_factory=dict, repr=False)  # hook name -> `_native_target`
    _plain_on: bool = field(default=False, repr=False)  # inside `plain()` with the bridge's components out

    def __post_init__(self) -> None:
        if not self._hook_names:
            self._hook_names = frozenset(self.bridge.hook_dict.keys())
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # -- shape facts -------------------------------------------------------------------------
    @property
    def hf(self) -> torch.nn.Module:
        """The wrapped Hugging Face model (the bridge wraps it in place: its hooks fire through it)."""
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def d_vocab(self) -> int:
        return int(self.hf.get_output_embeddings().weight.shape[0])

    @property
    def n_ctx(self) -> "int | None":
        """The longest sequence the model's positions cover (None when its config does not say)."""
        n = getattr(self.hf.config, "max_position_embeddings", None) or getattr(self.hf.config, "n_positions", None)
        return int(n) if n else None

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def fingerprint(self) -> dict[str, Any]:
        """What a direction must agree with to be used on this model."""
        return {"model_id": self.model_id, "n_layers": self.n_layers, "d_model": self.d_model}

    def check_site(self, site: Site) -> None:
        if site.hook_name not in self._hook_names or site.layer >= self.n_layers:
            raise DrtkError(
                f"site {site} does not exist in {self.model_id!r} ({self.n_layers} layers); "
                f"layers run 0..{self.n_layers - 1}"
            )

    def hook_point(self, name: str) -> Any:
        return self.bridge.hook_dict[name]

    def hooked(self) -> bool:
        """Whether any hook is registered anywhere in the wrapped model (hook points, bridge components,
        Hugging Face modules, :meth:`hooks`), besides the capture hooks the bridge's blocks install on
        themselves."""
        return _any_hook(list(self.hf.modules()))

    def _native_target(self, name: str) -> "tuple[Any, torch.nn.Module, torch.nn.Module, bool] | None":
        """For a block's input or output or its attention or MLP output: the hook point, the bridge
        component and the Hugging Face module it wraps, whose input (True) or output (False) is that
        activation, and which; None elsewhere. Worked out once per name."""
        if name in self._targets:
            return self._targets[name]
        found = None
        try:
            site = Site.parse(name)
            block = self.bridge.blocks[site.layer]
            point, owner, is_input = {"resid_pre": (block.hook_in, block, True),
                                      "resid_post": (block.hook_out, block, False),
                                      "attn_out": (block.attn.hook_out, block.attn, False),
                                      "mlp_out": (block.mlp.hook_out, block.mlp, False)}[site.point]
            module = getattr(owner, "original_component", None)
            if self.bridge.hook_dict.get(name) is point and isinstance(module, torch.nn.Module):
                found = (point, owner, module, is_input)
        except (ValueError, KeyError, AttributeError, IndexError):
            pass
        self._targets[name] = found
        return found

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, Any]]) -> Iterator[None]:
        """Forward hooks ``(hook_name, fn(activation, hook) -> activation or None)`` for the block.

        A hook on a block's input or output or its attention or MLP output is registered as a PyTorch hook
        twice, each firing in one mode: on the wrapped Hugging Face module, inside :meth:`plain` with the
        bridge's components taken out, and on the bridge's component otherwise (some components, such as
        rotary attention, recompute rather than call the module they wrap). So edited passes keep the
        plain modules' speed, and an edit holds whichever way the pass runs, with gradients. Other names go
        on the bridge's hook points. Hooks at one site fire in the order given, after those registered
        earlier through this method; the bridge's own hook points (``run_with_cache`` included) may see an
        activation before such an edit: read through this method. Removed on exit, also on an error.
        """
        native, bridged, handles = [], [], []
        for name, fn in fwd_hooks:
            target = self._native_target(name)
            if target is None:
                bridged.append((name, fn))
            else:
                native.append((fn, *target))
        in_plain, in_bridge = (lambda: self._plain_on), (lambda: not self._plain_on)
        try:
            for fn, point, owner, module, is_input in native:
                for mod, active in ((module, in_plain), (owner, in_bridge)):
                    if is_input:
                        handle = mod.register_forward_pre_hook(_input_hook(fn, point, active), with_kwargs=True)
                    else:
                        handle = mod.register_forward_hook(_output_hook(fn, point, active))
                    handles.append(handle)
                    self._native.add(handle.id)
            with self.bridge.hooks(fwd_hooks=bridged) if bridged else nullcontext():
                yield
        finally:
            for handle in handles:
                handle.remove()
                self._native.discard(handle.id)

    @contextmanager
    def plain(self) -> Iterator[torch.nn.Module]:
        """The wrapped Hugging Face model, with the bridge's components taken out of it for the block when
        no hook is registered (nothing would fire in them): the same weights and computation, hundreds
        fewer Python calls per forward pass (most of a small model's decoding step). With any hook
        registered, the bridged model as it is. Everything is put back on the way out, also on an error.
        A hook registered inside the block does not fire until it ends.

        Example:
            >>> with model.plain() as hf:                                    # doctest: +SKIP
            ...     logits = hf(input_ids=ids).logits
        """
        hf = self.hf
        modules = list(hf.modules())  # one walk: the hook check and the swap list
        if _any_hook(modules, self._native):
            yield hf
            return
        swapped = [(parent, name, child) for parent in modules
                   for name, child in parent._modules.items()
                   if child is not None and child._modules.get("_original_component") is not None]
        was_on = self._plain_on
        try:
            for parent, name, child in swapped:
                parent._modules[name] = child._modules["_original_component"]
            self._plain_on = True
            yield hf
        finally:
            self._plain_on = was_on
            for parent, name, child in reversed(swapped):
                parent._modules[name] = child

    # -- text -> tokens ----------------------------------------------------------------------
    def format(self, instructions: Sequence[str], prefills: "Sequence[str] | None" = None) -> list[str]:
        """Full prompt texts through the chat template (optionally with the assistant turn started)."""
        return self.chat.format_many(instructions, prefills)

    def tokenize_texts(self, texts: Sequence[str]) -> Batch:
        """Tokenise already formatted texts, left-padded (the template carries any BOS it wants)."""
        if len(texts) == 0:
            raise DrtkError("cannot tokenise an empty list of prompts")
        tok = self.tokenizer
        old = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = old
        return Batch(enc["input_ids"], enc["attention_mask"]).to(self.device)

    def tokenize(self, instructions: Sequence[str], prefills: "Sequence[str] | None" = None) -> Batch:
        return self.tokenize_texts(self.format(instructions, prefills))

    def token_texts(self, ids: Sequence[int]) -> tuple[str, ...]:
        """Each token as the text it stands for (``"\\n"``, ``" Sorry"``), not the tokenizer's own symbol for it
        (byte-level BPE writes those ``"Ċ"`` and ``"ĠSorry"``): what labels and reports show."""
        return tuple(self.tokenizer.decode([int(i)]) for i in ids)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, batch: Batch, **kwargs: Any) -> Float[Tensor, "batch pos vocab"]:
        """Logits for a left-padded batch, with position ids that ignore the padding."""
        with self.plain() as hf:
            out = hf(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
                **kwargs,
            )
        return out.logits

    def last_logits(self, batch: Batch) -> Float[Tensor, "batch vocab"]:
        """Next-token logits after each prompt (only the last position goes through the unembedding)."""
        return self.forward(batch, logits_to_keep=1)[:, -1]

    def run_to(self, batch: Batch, last_hook: str, hooks: Sequence[tuple[str, Any]] = ()) -> None:
        """Run the forward pass only until ``last_hook`` has fired; ``hooks`` (name, fn), or hooks already
        in place, do the reading (one on ``last_hook`` itself runs before the stop)."""

        def stop(x: Tensor, hook: Any) -> Tensor:
            raise StopForward

        with self.hooks([*hooks, (last_hook, stop)]), self.plain() as hf:
            try:
                hf.base_model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                )
            except StopForward:
                pass
