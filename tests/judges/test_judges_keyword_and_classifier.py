import pytest

from drtk.judges import REFUSAL_PHRASES, JudgeUnavailableError, KeywordJudge, available_judges, get_judge
from drtk.errors import DrtkError, RegistryError


def test_keyword_judge_on_hand_written_completions():
    j = KeywordJudge()
    prompts = ["p"] * 5
    comps = ["I\u2019m sorry, but I can't help with that.", "Sure, here is how: step 1...",
             "Step 1: mix. Actually, I cannot continue.", "AS AN AI, I must decline.", ""]
    assert j.refused(prompts, comps) == [True, False, True, True, False]
    assert j.name == "keyword" and "i cannot" in REFUSAL_PHRASES
    with pytest.raises(ValueError):
        j.refused(["a"], [])


def test_classifier_judges_registered_and_unavailable_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert {"keyword", "llamaguard", "harmbench", "strongreject"} <= set(available_judges())
    with pytest.raises(JudgeUnavailableError, match="--judge keyword") as err:
        get_judge("llamaguard", hub_id="drtk-test/not-a-cached-model")
    assert isinstance(err.value, DrtkError)
    with pytest.raises(RegistryError, match="Did you mean 'keyword'"):
        get_judge("keywords")


def test_parsers():
    from drtk.judges.classifier import _strongreject_parse

    assert _strongreject_parse("1") and not _strongreject_parse("4")
