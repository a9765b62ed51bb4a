"""``load_model``: any chat model the installed TransformerLens supports, as a :class:`ChatModel`."""

import json
import logging
from pathlib import Path
from typing import Any

import torch

from drtk.errors import ConfigError, ModelLoadError
from drtk.models.chat import chat_format_from_tokenizer
from drtk.models.embedded import EMBEDDED_NAME, HUB_ID, embedded_model_dir
from drtk.models.model import ChatModel
from drtk.models.tiny import TINY_MODEL_NAME, tiny_hf_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL = EMBEDDED_NAME
ALIASES = {EMBEDDED_NAME: HUB_ID}


def _default_device(device: "str | torch.device | None") -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device {str(device)!r} is not a device torch knows ({err}); use cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                          "use --device cpu, or leave it out to use a GPU when there is one")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(device)!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but MPS is not available here; use --device cpu")
    return dev


def _default_dtype(dtype: "str | torch.dtype | None", device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
                    "float64": torch.float64}[dtype]
        except KeyError:
            raise ModelLoadError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or float64") from None
    return dtype


def _load_hf(source: str, *, dtype: torch.dtype, trust_remote_code: bool, local_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(trust_remote_code=trust_remote_code, local_files_only=local_only)
    tok = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="eager", **kwargs)
    return model, tok


def _merge_adapter(folder: Path, *, dtype: torch.dtype, trust_remote_code: bool) -> tuple[Any, Any, str]:
    """A PEFT adapter folder: load its base with :func:`load_model`'s resolution and merge the adapter."""
    from peft import PeftModel

    meta = json.loads((folder / "adapter_config.json").read_text())
    base_name = meta.get("base_model_name_or_path")
    drtk_meta = folder / "drtk_base.json"
    if drtk_meta.exists():  # drtk records the exact base it trained from
        base_name = json.loads(drtk_meta.read_text()).get("base", base_name)
    if not base_name:
        raise ModelLoadError(f"{folder}/adapter_config.json names no base model (base_model_name_or_path)")
    base, tok, base_id = _resolve(base_name, dtype=dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    return merged, tok, f"{base_id}+{folder}"


def _resolve(name_or_path: str, *, dtype: torch.dtype, trust_remote_code: bool) -> tuple[Any, Any, str]:
    if name_or_path == TINY_MODEL_NAME:
        model, tok = tiny_hf_model()
        return model.to(dtype), tok, TINY_MODEL_NAME
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
            return _merge_adapter(path, dtype=dtype, trust_remote_code=trust_remote_code)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is a folder but holds no config.json (not a Hugging Face model folder)")
        model, tok = _load_hf(str(path), dtype=dtype, trust_remote_code=trust_remote_code, local_only=True)
        return model, tok, str(path)
    if path.exists():
        raise ModelLoadError(f"{path} is a file; pass the model's folder (config.json, weights and tokenizer files)")
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        raise ModelLoadError(f"no model folder at {path} (and the name is not a hub id, which looks like 'org/name')")
    if name_or_path.lower() in ALIASES:
        hub_id = ALIASES[name_or_path.lower()]
        try:  # a real hub checkpoint in the local cache wins over the embedded GGUF
            model, tok = _load_hf(hub_id, dtype=dtype, trust_remote_code=False, local_only=True)
            return model, tok, hub_id
        except OSError:
            folder = embedded_model_dir()
            model, tok = _load_hf(str(folder), dtype=dtype, trust_remote_code=False, local_only=True)
            return model, tok, EMBEDDED_NAME
    if "/" not in name_or_path:
        import difflib

        known = [EMBEDDED_NAME, TINY_MODEL_NAME]
        close = difflib.get_close_matches(name_or_path.lower(), known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelLoadError(
            f"model {name_or_path!r} is not a folder, a built-in name or a hub id like 'org/name'.{hint} "
            f"Built-in: {', '.join(known)}."
        )
    try:
        model, tok = _load_hf(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code, local_only=False)
    except Exception as err:
        raise ModelLoadError(
            f"could not load {name_or_path!r} from the Hugging Face hub or its local cache ({type(err).__name__}: "
            f"{err}). Check the name, log in for gated models, or pass a local folder."
        ) from err
    return model, tok, name_or_path


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: "str | torch.device | None" = None,
    dtype: "str | torch.dtype | None" = None,
    chat_template: "str | None" = None,
    system_prompt: "str | None" = None,
    trust_remote_code: bool = False,
) -> ChatModel:
    """Load a chat model as a hooked TransformerLens 4 model.

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (the embedded default), ``"drtk-tiny-chat"`` (random,
            for tests), a hub id (``"Qwen/Qwen2.5-0.5B-Instruct"``; cached or downloaded), a local
            Hugging Face folder, or a folder written by ``drtk train`` (merged weights or a LoRA adapter).
        device: defaults to CUDA when available.
        dtype: defaults to float32 on CPU and bfloat16 on CUDA. Raw (unfolded) weights are used
            throughout: drtk never calls ``enable_compatibility_mode``, so directions stay comparable.
        chat_template: a Jinja chat template, for tokenizers that lack one.
        system_prompt: passed to the template (None keeps the template's default).
        trust_remote_code: off unless you ask; drtk never runs a repository's code by default.

    Returns:
        A :class:`ChatModel` (``.bridge`` is the ``TransformerBridge``).

    Example:
        >>> model = load_model("smollm2-135m-instruct")            # doctest: +SKIP
        >>> model.bridge.run_with_cache(model.format(["Hi"])[0])  # doctest: +SKIP
    """
    from transformer_lens.model_bridge import TransformerBridge

    dev = _default_device(device)
    dt = _default_dtype(dtype, dev)
    hf_model, tok, model_id = _resolve(str(name_or_path), dtype=dt, trust_remote_code=trust_remote_code)
    chat = chat_format_from_tokenizer(tok, chat_template=chat_template, system_prompt=system_prompt)
    if chat_template:
        tok.chat_template = chat_template
    hf_model = hf_model.to(dev).eval()
    hf_model.config._attn_implementation = "eager"
    bridge = TransformerBridge.boot_transformers(model_id, hf_model=hf_model, tokenizer=tok, dtype=dt, device=dev)
    bridge.eval()
    logger.info("loaded %s: %d layers, d_model %d on %s/%s", model_id, bridge.cfg.n_layers, bridge.cfg.d_model, dev, dt)
    return ChatModel(bridge=bridge, tokenizer=tok, chat=chat, model_id=model_id)


def same_place(a: str, b: str) -> bool:
    """Two names of one model or file: equal, or paths to the same place (``runs/x`` and ``./runs/x``, or a
    relative and an absolute path)."""
    return a == b or (Path(a).exists() and Path(a).resolve() == Path(b).resolve())


def local_path(model_id: str) -> "str | None":
    """The absolute path of a model or file given by another path that exists here (relative, or through a
    link), else None (a hub id, a built-in name, or already that absolute path): recorded beside the name so
    the record still finds it from another folder."""
    where = str(Path(model_id).resolve()) if Path(model_id).exists() else None
    return where if where != model_id else None


def lineage(model_id: str) -> list[str]:
    """``model_id`` and the models it was trained from, nearest first, as far as drtk's records tell: a
    trained folder's ``drtk_train.json`` (with its bases' records), an adapter's ``drtk_base.json``, or an
    adapter's ``base+folder`` id."""
    chain = [model_id]
    base_id, plus, folder = model_id.partition("+")
    if plus:
        chain.append(base_id)
    folder = Path(folder if plus else model_id)
    for name in ("drtk_train.json", "drtk_base.json"):
        try:
            record = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        while isinstance(record, dict) and isinstance(record.get("base"), str):
            chain.append(record["base"])
            if isinstance(record.get("base_path"), str):  # the same base, absolute (records from any folder)
                chain.append(record["base_path"])
            record = record.get("base_record")
    return chain


def related(a: str, b: str) -> bool:
    """Whether one model was trained from the other, or both from a common one, by their records (a built-in
    name and the hub id it stands for are one model)."""
    def names(model_id: str) -> list[str]:
        chain = lineage(model_id)
        return chain + [ALIASES[x.lower()] for x in chain if x.lower() in ALIASES]

    return any(same_place(x, y) for x in names(a) for y in names(b))
