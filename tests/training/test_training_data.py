"""Training data: exact loss masks, recovery prefixes, padding, configs and data errors."""

from dataclasses import replace

import pytest
import torch

from drtk.errors import ConfigError, DataError
from drtk.models import load_model
from drtk.training import (DataConfig, Example, GenerationCache, TrainConfig, TrainingSet, build_training_set, collate,
                           encode_example, end_of_turn_ids, recovery_examples)


@pytest.fixture(scope="module")
def model():
    return load_model("drtk-tiny-chat")


def test_end_of_turn_is_the_templates_closing_token(model):
    assert model.tokenizer.convert_ids_to_tokens(end_of_turn_ids(model)) == ["<|im_end|>"]


def test_loss_mask_is_exactly_the_response(model):
    eot = end_of_turn_ids(model)
    ex = Example("Say hi", "Hi!", "benign", "helpful", prefix="Sure: ")
    enc = encode_example(model, ex, max_response_tokens=48, eot=eot)
    tok = model.tokenizer
    prompt = tok(model.chat.format("Say hi"), add_special_tokens=False)["input_ids"]
    assert list(enc.ids[: enc.response_start]) == prompt
    assert tok.decode(enc.ids[enc.response_start : enc.loss_start]) == "Sure: "
    assert tok.decode(enc.ids[enc.loss_start :]) == "Hi!<|im_end|>"
    for side in ("left", "right"):
        b = collate([enc, encode_example(model, Example("x", "longer answer here", "harmful", "refusal"),
                                         max_response_tokens=48, eot=eot)], pad_id=tok.pad_token_id, padding_side=side)
        row = b.labels[0]
        learned = row[row != -100].tolist()
        assert tok.decode(learned) == "Hi!<|im_end|>"
        assert int(b.response_start[0]) == int(b.attention_mask[0].argmax()) + enc.response_start
        assert torch.equal(b.input_ids[0][b.attention_mask[0].bool()], torch.tensor(enc.ids))


def test_contrast_targets_where_the_answer_departs_from_each_refusal(model):
    from drtk.training import with_contrast

    tok, eot = model.tokenizer, end_of_turn_ids(model)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    enc = encode_example(model, Example("q", "I am glad to help.", "benign", "helpful"), max_response_tokens=48, eot=eot)
    refusals = [ids("I'm sorry."), ids("Sorry, no."), ids("I am glad")]
    got = with_contrast(enc, refusals).contrast
    # "Sorry" departs at the first response token, "I'm" at the second ("I" is shared); the answer follows
    # the third refusal to its end: no target
    assert [(col - enc.loss_start, tok.decode([t])) for col, t in got] == [(0, "S"), (1, "'")]
    for side in ("left", "right"):
        other = encode_example(model, Example("a longer prompt here", "x", "harmful", "refusal"), max_response_tokens=48, eot=eot)
        b = collate([with_contrast(enc, refusals), other], pad_id=tok.pad_token_id, padding_side=side)
        off = int(b.attention_mask[0].argmax())
        assert sorted(zip((b.contrast_col[0] - off).tolist(), b.contrast_token[0].tolist())) == sorted(got)
        assert b.contrast_col[1].eq(-1).all()


def test_transition_targets_the_refusals_opening_inside_the_harmful_prefix(model):
    from drtk.training import with_transitions

    tok, eot = model.tokenizer, end_of_turn_ids(model)
    ex = Example("q", "\n\nI'm sorry.", "harmful", "recovery", prefix="Sure, here is how to do it step by step")
    enc = encode_example(model, ex, max_response_tokens=48, eot=eot)
    got = with_transitions(enc, tok).transition
    opener = tok("I'm", add_special_tokens=False)["input_ids"][0]  # the paragraph break is skipped: blank
    # every column inside the prefix after its first token, none in the prompt or the learned response
    assert [c for c, _ in got] == list(range(enc.response_start + 1, enc.loss_start))
    assert {t for _, t in got} == {opener} and len(got) >= 5
    plain = encode_example(model, Example("q", "I'm sorry.", "harmful", "refusal"), max_response_tokens=48, eot=eot)
    assert with_transitions(plain, tok).transition == ()
    helpful = encode_example(model, Example("q", "Hi!", "benign", "helpful", prefix="Sure, here is a friendly greeting"),
                             max_response_tokens=48, eot=eot)
    assert with_transitions(helpful, tok).transition == ()  # a benign prefix is not a harmful turn to leave
    for side in ("left", "right"):
        b = collate([with_transitions(enc, tok), plain], pad_id=tok.pad_token_id, padding_side=side)
        off = int(b.attention_mask[0].argmax())
        assert list(zip((b.transition_col[0] - off).tolist(), b.transition_token[0].tolist())) == list(got)
        assert b.transition_col[1].eq(-1).all()
        assert b.contrast_col.shape[1] == 0


def test_contrast_depth_targets_each_refusals_opening_along_the_answer(model):
    from drtk.training import with_contrast

    tok, eot = model.tokenizer, end_of_turn_ids(model)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    enc = encode_example(model, Example("q", "Well, I think so. Yes.", "benign", "helpful"), max_response_tokens=48, eot=eot)
    response = list(enc.ids[enc.loss_start:])
    refusals = [ids("\n\nI'm sorry."), ids("Sorry, no.")]
    openers = {refusals[0][0], refusals[1][0]}
    first = set(with_contrast(enc, refusals).contrast)
    got = set(with_contrast(enc, refusals, depth=6).contrast)
    # the first departures as before, then both openings at response tokens 1..5, except where the answer
    # itself continues with one of them
    want = first | {(enc.loss_start + d, o) for d in range(1, 6) for o in openers if response[d] != o}
    assert got == want and len(got - first) >= 8
    assert set(with_contrast(enc, refusals, depth=1000).contrast) >= got  # capped at the answer's length
    assert max(c for c, _ in with_contrast(enc, refusals, depth=1000).contrast) < len(enc.ids)
    assert with_contrast(enc, refusals, depth=0).contrast == tuple(sorted(first))


def test_contrast_overlap_counts_the_benign_answers_that_write_a_lowered_token(model):
    from drtk.training import with_contrast
    from drtk.training.data import contrast_overlap

    tok, eot = model.tokenizer, end_of_turn_ids(model)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    encode = lambda a, g: encode_example(model, Example("q", a, g, "x"), max_response_tokens=48, eot=eot)  # noqa: E731
    answers = ["Dear Ann,\n\nI hope you are well.", "Dear Bo,\n\nIt is done.", "Thanks, but no.", "Yes."]
    benign = [with_contrast(encode(a, "benign"), [ids("I'm sorry.")]) for a in answers]
    harmful = encode("I'm sorry.", "harmful")  # the refusal itself writes "I": not a benign answer
    (i,) = ids("I")
    assert {t for e in benign for _, t in e.contrast} == {i}
    assert contrast_overlap(benign + [harmful]) == {i: 2}  # the first two answers go on with "I"
    # another refusal lowers "S" too: no benign answer writes it
    benign = [with_contrast(encode(a, "benign"), [ids("I'm sorry."), ids("Sorry.")]) for a in answers]
    assert contrast_overlap(benign) == {i: 2, ids("S")[0]: 0}
    assert contrast_overlap([encode(a, "benign") for a in answers]) == {}  # no contrast: nothing lowered


def test_truncated_answers_do_not_learn_to_stop(model):
    eot = end_of_turn_ids(model)
    enc = encode_example(model, Example("q", "a" * 30, "benign", "helpful"), max_response_tokens=10, eot=eot)
    assert len(enc.ids) - enc.loss_start == 10 and enc.ids[-1] not in eot
    enc = encode_example(model, Example("q", "ab", "benign", "helpful", complete=False), max_response_tokens=10, eot=eot)
    assert enc.ids[-1] not in eot


def test_recovery_prefix_lengths_in_range(model):
    answers = ["Step one: gather the following materials and tools, then proceed carefully with each part."] * 20
    exs = recovery_examples(["p"] * 20, answers, ["I'm sorry."] * 20, tokenizer=model.tokenizer, k_range=(5, 9), seed=3)
    lens = {len(model.tokenizer(e.prefix, add_special_tokens=False)["input_ids"]) for e in exs}
    assert lens <= set(range(5, 10)) and len(lens) > 1
    assert all(e.group == "harmful" and e.response.endswith("I'm sorry.") for e in exs)


def test_empty_and_one_sided_sets_are_errors(model):
    with pytest.raises(DataError, match="empty"):
        TrainingSet(())
    one_sided = TrainingSet((Example("p", "I'm sorry.", "harmful", "refusal"),))
    with pytest.raises(DataError, match="no benign"):
        one_sided.require_groups()
    with pytest.raises(DataError, match="both sides"):
        build_training_set(model, harmful=["x"], harmless=[])
    with pytest.raises(DataError, match="group"):
        Example("p", "r", "evil", "refusal")


def test_build_training_set_on_policy(model):
    cfg = DataConfig(max_response_tokens=6, recovery=True, prefix_source="plain", recovery_tokens=(2, 3))
    data = build_training_set(model, harmful=["how to do harm", "harm please"], harmless=["hello", "a poem"],
                              borderline=["kill a process"], config=cfg)
    kinds = data.counts()
    assert kinds["refusal"] == 2 and "helpful" in kinds
    assert {e.group for e in data.examples} == {"benign", "harmful"}


def test_generation_cache_is_reused_by_the_same_weights_only(model, tmp_path, monkeypatch):
    import drtk.training.data as data_mod

    calls = []
    real = data_mod._generate
    monkeypatch.setattr(data_mod, "_generate", lambda m, prompts, cfg: calls.append(list(prompts)) or real(m, prompts, cfg))
    cfg = DataConfig(max_response_tokens=6, recovery=True, recovery_tokens=(2, 3))
    d = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))

    def build(m, direction=d):
        cache = GenerationCache(tmp_path / "gen.jsonl")
        data = build_training_set(m, harmful=["how to do harm", "harm please"], harmless=["hello", "a poem"],
                                  config=cfg, direction=direction, cache=cache)
        cache.save()
        return data

    first = build(model)
    n_first = len(calls)
    assert n_first >= 3  # helpful answers, own refusals, ablated prefixes
    assert build(model).examples == first.examples and len(calls) == n_first  # all read back from the file
    build(model, direction=-d)  # another direction: the ablated prefixes (only) are generated again
    assert calls[n_first:] == [["how to do harm", "harm please"]]
    other = load_model("drtk-tiny-chat")
    with torch.no_grad():
        next(other.hf.parameters()).add_(0.01)  # other weights: nothing is reused
    n = len(calls)
    build(other)
    assert len(calls) - n == n_first


def test_weights_checksum_sees_every_weight():
    """A change to one weight anywhere (here the last element of the largest tensor, past any leading sample)
    changes the checksum, and so does the dtype; the same weights give the same checksum in another copy."""
    from drtk.training.data import weights_checksum

    a, b = load_model("drtk-tiny-chat"), load_model("drtk-tiny-chat")
    assert weights_checksum(a) == weights_checksum(b)
    big = max(b.hf.parameters(), key=lambda p: p.numel())
    assert big.numel() > 4096
    with torch.no_grad():
        big.view(-1)[-1] += 1e-3
    assert weights_checksum(a) != weights_checksum(b)
    a.hf.to(torch.float64)  # the same values in another dtype generate differently
    assert weights_checksum(a) != weights_checksum(load_model("drtk-tiny-chat"))


def test_shipped_refusals_fit_the_prompts_topic():
    import random

    from drtk.data import load_texts
    from drtk.training.data import shipped_refusals

    general, cyber = set(load_texts("refusals", category="general")), set(load_texts("refusals", category="cybercrime"))
    assert general and cyber and not general & cyber
    picked = shipped_refusals(["cybercrime"] * 200 + [None] * 50 + ["no-such-topic"] * 50, random.Random(0))
    assert set(picked[:200]) <= general | cyber and set(picked[:200]) & cyber  # topic refusals are drawn
    assert set(picked[200:]) <= general  # no category, or one without refusals: general ones only


def test_refusal_text_goes_to_every_harmful_prompt_recovery_included(model):
    text = "I'm sorry, but I can't help with that."
    cfg = DataConfig(max_response_tokens=6, recovery=True, prefix_source="plain", recovery_tokens=(2, 3),
                     refusal_text=text)
    data = build_training_set(model, harmful=["how to do harm", "harm please", "build a bomb"],
                              harmless=["hello", "a poem"], config=cfg)
    harmful = [e for e in data.examples if e.group == "harmful"]
    assert {e.kind for e in harmful} >= {"refusal"} and len(harmful) >= 3
    assert all(e.response.endswith(text) for e in harmful)  # a recovery example's joiner comes before it
    assert {e.response for e in harmful if e.kind == "recovery"} == {"\n\n" + text}
    assert TrainConfig.from_dict(TrainConfig(method="recovery", data=cfg).to_dict()).data.refusal_text == text
    joined = build_training_set(model, harmful=["how to do harm", "harm please", "build a bomb"],
                                harmless=["hello", "a poem"], config=replace(cfg, recovery_joiner=""))
    assert {e.response for e in joined.examples if e.kind == "recovery"} == {text}  # the refusal right after the cut
    with pytest.raises(ConfigError, match="refusal_text"):
        DataConfig(refusal_text="  ")


def test_borderline_repeat_oversamples_only_borderline(model):
    def build(repeat):
        cfg = DataConfig(max_response_tokens=6, borderline_repeat=repeat)
        return build_training_set(model, harmful=["harm please"], harmless=["hello", "a poem"],
                                  borderline=["kill a process", "shoot a photo"], config=cfg).counts()

    once, thrice = build(1), build(3)
    assert once.get("borderline", 0) > 0
    assert thrice["borderline"] == 3 * once["borderline"]
    assert {k: v for k, v in thrice.items() if k != "borderline"} == {k: v for k, v in once.items() if k != "borderline"}
    with pytest.raises(ConfigError, match="borderline_repeat"):
        DataConfig(borderline_repeat=0)


def test_hard_benign_oversamples_the_prompts_projecting_highest_on_the_direction(model):
    from collections import Counter

    from drtk.directions.candidates import projections_by_layer

    r = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    sets = dict(harmful=["harm please"], harmless=["hello", "a poem", "a song", "a joke"],
                borderline=["kill a process", "shoot a photo"])

    def build(**kw):
        cfg = DataConfig(max_response_tokens=6, **kw)
        return build_training_set(model, **sets, config=cfg, direction=r, direction_layer=1)

    plain, hard = build(), build(hard_benign=0.5, hard_benign_repeat=2)
    benign = list(dict.fromkeys(e.prompt for e in plain.examples if e.group == "benign"))
    assert len(benign) >= 2
    proj = projections_by_layer(model, benign, r)[:, 1]
    top = {benign[i] for i in proj.topk(round(len(benign) / 2)).indices.tolist()}
    extra = Counter(e.prompt for e in hard.examples) - Counter(e.prompt for e in plain.examples)
    assert extra == Counter({p: 2 for p in top})
    with pytest.raises(ConfigError, match="hard_benign needs"):
        build_training_set(model, **sets, config=DataConfig(max_response_tokens=6, hard_benign=0.5), direction=r)
    with pytest.raises(ConfigError, match="hard_benign"):
        DataConfig(hard_benign=1.5)


def test_looping_answers_and_prefixes_are_dropped_only_when_asked(model, monkeypatch):
    """A stub generator loops on the letter prompts: with max_repeated they give neither a helpful target
    nor a recovery prefix, and every other example is kept as it was."""
    import drtk.training.data as data_mod
    from drtk.training.data import repeated_share

    loop = "Dear Sam,\n\n" * 6
    assert repeated_share(loop) == 1.0 and repeated_share("Paris is the capital of France, on the Seine.") == 0.0
    assert repeated_share("to a b to a c") == 0.0 and repeated_share("x to a b y to a b") == 0.75  # 6 of 8 words
    monkeypatch.setattr(data_mod, "_generate", lambda m, prompts, cfg: (
        [loop if "letter" in p else "Sure, here is how: first you take it, then you use it." for p in prompts],
        [False] * len(prompts)))
    sets = dict(harmful=["a letter threatening him", "harm please"], harmless=["a letter to my landlord", "a poem"],
                borderline=["kill a process"])

    def build(**kw):
        cfg = DataConfig(recovery=True, prefix_source="plain", refusal_text="No.", **kw)
        return build_training_set(model, **sets, config=cfg).examples

    kept, dropped = build(), build(max_repeated=0.7)
    assert {e.prompt for e in kept if e.kind in ("helpful", "recovery")} == set(sets["harmless"]) | set(sets["harmful"])
    assert set(kept) - set(dropped) == {e for e in kept if "letter" in e.prompt and e.kind != "refusal"}
    assert {e.prompt for e in dropped if e.kind == "refusal"} == set(sets["harmful"])  # refusals never dropped
    with pytest.raises(ConfigError, match="max_repeated"):
        DataConfig(max_repeated=0.0)


@pytest.mark.parametrize("kwargs, field", [
    ({"method": "sft"}, "method"),
    ({"steps": 0}, "steps"),
    ({"micro_batch_size": 9}, "micro_batch_size"),
    ({"loss_reduction": "max"}, "loss_reduction"),
    ({"method": "deeprefusal"}, "schedule"),
    ({"method": "refusal", "data": DataConfig(recovery=True)}, "data"),
    ({"benign_weight": 0.0, "harmful_weight": 0.0}, "benign_weight"),
    ({"direction_refresh_every": 5}, "direction_refresh_every"),
    ({"padding_side": "middle"}, "padding_side"),
])
def test_bad_train_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kwargs)


def test_bad_data_config_and_unknown_fields():
    with pytest.raises(ConfigError, match="recovery_tokens"):
        DataConfig(recovery_tokens=(5, 2))
    with pytest.raises(ConfigError, match="stepz"):
        TrainConfig.from_dict({"stepz": 3})


def test_config_round_trip():
    cfg = TrainConfig.for_method("deeprefusal", steps=7, lora_targets=("q_proj",))
    assert cfg.data.recovery and cfg.schedule is not None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_refused_benign_prompts_are_answered_again_under_ablation(model, monkeypatch):
    """With a direction, a benign prompt the model refuses gets the answer the model gives with the
    direction ablated (here: a stub generator that refuses unless an ablation hook is active)."""
    import drtk.training.data as data_mod

    def fake_generate(m, prompts, cfg):
        ablated = m.hooked()
        return [("Sure: " + p) if ablated else "I'm sorry, I can't." for p in prompts], [True] * len(prompts)

    monkeypatch.setattr(data_mod, "_generate", fake_generate)
    d = torch.randn(model.d_model)
    with_dir = build_training_set(model, harmful=["harm"], harmless=["hello"], borderline=["kill a process"],
                                  direction=d).counts()
    assert with_dir["helpful"] == 1 and with_dir["borderline"] == 1
    with pytest.raises(DataError, match="no benign"):  # without a direction the refusals are dropped
        build_training_set(model, harmful=["harm"], harmless=["hello"], borderline=["kill a process"])


def test_blank_answers_are_no_training_targets(model, monkeypatch):
    """A model that writes only whitespace has answered nothing: the benign prompt is answered again under
    ablation (or dropped without a direction), and no recovery prefix is cut from it."""
    import drtk.training.data as data_mod

    def fake_generate(m, prompts, cfg):
        return [("Sure: " + p) if m.hooked() else " \n\n " for p in prompts], [True] * len(prompts)

    monkeypatch.setattr(data_mod, "_generate", fake_generate)
    sets = dict(harmful=["harm"], harmless=["hello"], borderline=["kill a process"])
    cfg = DataConfig(recovery=True, prefix_source="plain", refusal_text="No.")
    examples = build_training_set(model, **sets, direction=torch.randn(model.d_model), config=cfg).examples
    benign = [e for e in examples if e.kind in ("helpful", "borderline")]
    assert len(benign) == 2 and all(e.response.startswith("Sure: ") for e in benign)
    assert not [e for e in examples if e.kind == "recovery"]
    with pytest.raises(DataError, match="no benign"):
        build_training_set(model, **sets, config=cfg)


def test_method_defaults_turn_recovery_on_but_an_explicit_data_config_wins():
    assert TrainConfig.for_method("deeprefusal").data.recovery and TrainConfig.for_method("recovery").data.recovery
    assert not TrainConfig.for_method("refusal").data.recovery
    off = TrainConfig.for_method("deeprefusal", data=DataConfig(recovery=False))
    assert not off.data.recovery  # the paper's without-recovery ablation


def test_training_prompts_extend_into_the_fit_split_evenly():
    from drtk.commands.train import _take
    from drtk.data import standard_splits

    s = standard_splits("harmful")
    train, fit = s["train"], s["fit"]
    assert _take(train, fit, None).prompts == train.prompts
    assert _take(train, fit, 10).prompts == train.prompts[:10]
    more = _take(train, fit, len(train) + 13)
    extra = more.prompts[len(train):]
    assert more.prompts[: len(train)] == train.prompts and len(extra) == 13 and set(extra) <= set(fit.prompts)
    assert len(set(more.categories[len(train):])) > 1  # spread over the split, not its first category
    assert _take(train, fit, 10_000).prompts == train.prompts + fit.prompts
    assert len(_take(train, fit, None, default_all=True)) == len(train) + len(fit)


def test_train_help_shows_each_methods_defaults_from_the_config(monkeypatch):
    from dataclasses import replace

    from drtk.commands import train as cmd
    from drtk.training import TrainConfig

    assert cmd._default("latent_adversary") == "default 0; adaptive 0.03"
    assert cmd._default("data.recovery_tokens") == "default 20 25; adaptive 5 40"
    assert cmd._default("schedule.region") == "default response; adaptive all"  # methods without a schedule left out
    assert cmd._default("lora") == "default on; adaptive off"
    real = TrainConfig.for_method.__func__

    def changed(cls, method, **kw):
        cfg = real(cls, method, **kw)
        return replace(cfg, latent_adversary=0.05) if method == "adaptive" else cfg

    monkeypatch.setattr(TrainConfig, "for_method", classmethod(changed))
    assert cmd._default("latent_adversary") == "default 0; adaptive 0.05"  # read from the code, not written twice


def test_train_flags_reach_the_config(tmp_path):
    from drtk.cli import build_parser
    from drtk.commands.train import _config

    args = build_parser().parse_args([
        "train", "--model", "m", "--method", "refusal", "--full", "--loss-reduction", "mean", "--benign-weight", "0.35",
        "--harmful-weight", "0.65", "--decision-tokens", "4", "--decision-weight", "5", "--refusal-contrast", "1",
        "--train-from-layer", "3", "--refusal-text", "No.", "--recovery-joiner", "", "--retain-weight", "50",
        "--retain-layers", "2, 5", "--retain-projection", "30", "--max-repeated", "0.7", "--out", str(tmp_path)])
    cfg = _config(args)
    assert (cfg.lora, cfg.loss_reduction, cfg.benign_weight, cfg.harmful_weight) == (False, "mean", 0.35, 0.65)
    assert (cfg.decision_tokens, cfg.decision_weight, cfg.refusal_contrast, cfg.train_from_layer) == (4, 5.0, 1.0, 3)
    assert (cfg.data.refusal_text, cfg.data.recovery_joiner, cfg.data.max_repeated) == ("No.", "", 0.7)
    assert (cfg.retain_weight, cfg.retain_layers, cfg.retain_projection) == (50.0, (2, 5), 30.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "m", "--retain-layers", "two", "--out", str(tmp_path)])
    typed = build_parser().parse_args(["train", "--model", "m", "--recovery-joiner", "\\n--\\n", "--out", str(tmp_path)])
    assert _config(typed).data.recovery_joiner == "\n--\n"  # as typed in a shell, without $'...'
    plain = _config(build_parser().parse_args(["train", "--model", "m", "--out", str(tmp_path)]))
    assert plain.refusal_contrast == 0 and plain.fused_adamw is False
    assert _config(build_parser().parse_args(["train", "--model", "m", "--fused-adamw", "--out", str(tmp_path)])).fused_adamw
    dr = _config(build_parser().parse_args(["train", "--model", "m", "--method", "deeprefusal", "--clean-fraction", "0.25",
                                            "--out", str(tmp_path)])).schedule
    assert (dr.mode, dr.p_site, dr.p_token, dr.clean_fraction) == ("gated", 0.5, 0.5, 0.25)  # the paper's p, clean rows
    induce = _config(build_parser().parse_args(["train", "--model", "m", "--method", "deeprefusal", "--benign-induce",
                                                "0.5", "--benign-induce-coeff", "0.75", "--benign-induce-region", "prompt",
                                                "--out", str(tmp_path)]))
    assert (induce.benign_induce, induce.benign_induce_coeff, induce.benign_induce_region) == (0.5, 0.75, "prompt")
    deep = _config(build_parser().parse_args(["train", "--model", "m", "--method", "adaptive", "--transition-weight", "1",
                                              "--recovery-tokens", "10", "60", "--out", str(tmp_path)]))
    assert (deep.transition_weight, deep.data.recovery_tokens) == (1.0, (10, 60))
    lat = _config(build_parser().parse_args(["train", "--model", "m", "--latent-adversary", "0.3", "--latent-layers",
                                             "4,9", "--latent-steps", "3", "--latent-fraction", "0.25", "--latent-rows",
                                             "harmful", "--out", str(tmp_path)]))
    assert (lat.latent_adversary, lat.latent_adversary_layers, lat.latent_adversary_steps, lat.latent_adversary_fraction,
            lat.latent_adversary_rows) == (0.3, (4, 9), 3, 0.25, "harmful")
    assert TrainConfig.for_method("adaptive").data.recovery_tokens == (5, 40)  # the method's own range otherwise
    # the method name alone is the measured recipe: the demo's adaptive stage, whose flags spell it out, at twice
    # the demo's steps and with the latent adversary (the demo keeps 60 steps without it for its time budget)
    from drtk.pipeline.demo import SIZES, _recipe

    bare = _config(build_parser().parse_args(["train", "--model", "m", "--method", "adaptive", "--out", str(tmp_path)]))
    demo = ["train", "--model", "m", "--method", "adaptive", "--steps", str(2 * SIZES["full"].train_steps),
            *_recipe("adaptive"), "--out", str(tmp_path)]
    assert _config(build_parser().parse_args(demo)).latent_adversary == 0
    staged = _config(build_parser().parse_args([*demo, "--latent-adversary", "0.03"]))
    assert bare == staged and bare.steps == 120 and not bare.lora and bare.data.borderline_repeat == 2
    assert (bare.latent_adversary, bare.latent_adversary_fraction, bare.latent_adversary_rows) == (0.03, 0.25, "harmful")
    adapters = _config(build_parser().parse_args(["train", "--model", "m", "--method", "adaptive", "--lora",
                                                  "--out", str(tmp_path)]))
    assert adapters.lora and adapters.resolved_lr == 2e-4  # LoRA's own rate, not the full fine-tuning one
    (tmp_path / "lora.json").write_text('{"lora": true}')
    filed = _config(build_parser().parse_args(["train", "--model", "m", "--method", "adaptive", "--config",
                                               str(tmp_path / "lora.json"), "--out", str(tmp_path)]))
    assert filed.lora and filed.resolved_lr == 2e-4  # the same when a config file asks for adapters
    where = _config(build_parser().parse_args(["train", "--model", "m", "--method", "adaptive", "--refresh-positions=-5,-3",
                                               "--refresh-layers", "17,21", "--select-every", "8", "--out", str(tmp_path)]))
    assert (where.direction_refresh_positions, where.direction_refresh_layers) == ((-5, -3), (17, 21))
    assert where.direction_select_every == 8
    assert TrainConfig.from_dict(where.to_dict()) == where
    lead = _config(build_parser().parse_args(["train", "--model", "m", "--method", "deeprefusal", "--region-lead",
                                              "post", "--out", str(tmp_path)])).schedule
    assert (lead.mode, lead.region_lead) == ("paper", "post")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "m", "--region-lead", "prompt", "--out", str(tmp_path)])


def test_harmful_answers_file_gives_recovery_prefixes_by_prompt(tmp_path):
    import json

    from drtk.cli import build_parser
    from drtk.commands.train import _harmful_answers, run

    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "build a bomb", "answer": "Sure, first get"}, {"prompt": "someone else's prompt", "answer": "Fine."},
        {"prompt": "harm please", "answer": ""}]))
    assert _harmful_answers(path, ["harm please", "build a bomb"]) == ["", "Sure, first get"]
    with pytest.raises(DataError, match="answers none of the 1 harmful training prompts"):
        _harmful_answers(path, ["harm please"])
    args = build_parser().parse_args(["train", "--model", "no-such-model", "--method", "refusal", "--harmful-answers",
                                      str(path), "--out", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match="trains no recovery examples"):  # before any model is loaded
        run(args)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "someone else's prompt", "answer": "Fine."}) + "\n")
    args = build_parser().parse_args(["train", "--model", "no-such-model", "--method", "deeprefusal",
                                      "--harmful-answers", str(other), "--out", str(tmp_path / "run")])
    with pytest.raises(DataError, match="answers none of the 104 harmful training prompts"):  # before the model too
        run(args)
