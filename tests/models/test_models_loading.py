import pytest
import torch

from drtk.errors import ChatTemplateError, ModelLoadError
from drtk.models import chat_format_from_tokenizer, load_model
from drtk.models.tiny import tiny_tokenizer
from tests.conftest import PROMPTS


def test_tiny_model_has_distinct_dimensions(tiny):
    cfg = tiny.hf.config
    dims = [cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.num_attention_heads, cfg.head_dim,
            cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size]
    assert len(set(dims)) == len(dims)
    assert (tiny.n_layers, tiny.d_model, tiny.d_vocab) == (3, 40, 263)


def test_chat_format_is_derived_from_template(tiny):
    chat = tiny.chat
    assert chat.suffix == "<|im_end|>\n<|im_start|>assistant\n"
    text = chat.format("Hello", prefill="Sure")
    assert text == tiny.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True) + "Sure"
    ids = tiny.tokenizer(chat.format("Hello"), add_special_tokens=False)["input_ids"]
    assert tuple(ids[-chat.n_post:]) == chat.post_instruction_ids


def test_system_prompt_goes_through_template():
    chat = chat_format_from_tokenizer(tiny_tokenizer(), system_prompt="Be terse.")
    assert "Be terse." in chat.prefix and "tiny test assistant" not in chat.prefix


def test_missing_chat_template_is_a_clear_error():
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ChatTemplateError, match="chat_template="):
        chat_format_from_tokenizer(tok)


def test_chat_template_can_be_passed():
    tok = tiny_tokenizer()
    template = tok.chat_template
    tok.chat_template = None
    chat = chat_format_from_tokenizer(tok, chat_template=template)
    assert chat.suffix.endswith("assistant\n")


def test_unknown_model_name_suggests_close_match():
    with pytest.raises(ModelLoadError, match="Did you mean 'smollm2-135m-instruct'"):
        load_model("smollm2-135m-instrct")


@pytest.mark.parametrize("name", ["/no/such/folder", "./runs/missing/model", "~/missing-model", "runs/demo/missing/model"])
def test_missing_folder_is_a_clear_error_not_a_hub_lookup(name):
    with pytest.raises(ModelLoadError, match="no model folder at"):
        load_model(name)


def test_a_file_instead_of_a_folder_is_a_clear_error(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file; pass the model's folder"):
        load_model(str(weights))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_batched_forward_equals_single_under_left_padding(tiny):
    batch = tiny.tokenize(PROMPTS)
    assert (batch.attention_mask == 0).any(), "the test needs padding"
    batched = tiny.last_logits(batch)
    for i, prompt in enumerate(PROMPTS):
        single = tiny.last_logits(tiny.tokenize([prompt]))
        torch.testing.assert_close(batched[i], single[0], atol=1e-5, rtol=1e-5)


def test_saved_folder_loads_back(tiny, tmp_path):
    from drtk.models import save_pretrained

    save_pretrained(tiny, tmp_path)
    again = load_model(str(tmp_path))
    batch = tiny.tokenize(PROMPTS[:2])
    torch.testing.assert_close(again.last_logits(again.tokenize(PROMPTS[:2])), tiny.last_logits(batch))
    assert again.chat.suffix == tiny.chat.suffix


@pytest.mark.embedded
def test_embedded_model_loads_as_bridge(embedded):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(embedded.bridge, TransformerBridge)
    assert (embedded.n_layers, embedded.d_model) == (30, 576)
    assert embedded.tokenizer.convert_ids_to_tokens(list(embedded.chat.post_instruction_ids)) == [
        "<|im_end|>", "Ċ", "<|im_start|>", "ass", "istant", "Ċ"]
    # bridge and wrapped HF model give the same logits
    batch = embedded.tokenize(["Name a colour."])
    logits = embedded.bridge(batch.input_ids)
    torch.testing.assert_close(logits[:, -1], embedded.last_logits(batch), atol=1e-4, rtol=1e-4)
