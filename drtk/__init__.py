"""drtk: find the refusal direction in chat LLMs, attack it, and rebuild refusal so it survives.

The names a notebook needs::

    import drtk
    model = drtk.load_model("smollm2-135m-instruct")
    result = drtk.find_direction(model, harmful_fit, harmless_fit, harmful_val, harmless_val)
    with drtk.ablation(model, result.direction.vector):
        drtk.generate(model, prompts)

Importing drtk has no side effects: no logging configuration, no environment reads, no CUDA, no files.
"""

__version__ = "0.1.0"

from drtk._types import Site
from drtk.data import PromptSet, load_prompts, split_prompts, standard_splits
from drtk.directions import Direction, SelectionConfig, compute_candidates, find_direction
from drtk.errors import DrtkError
from drtk.generation import GenerationConfig, generate
from drtk.interventions import ablation, actadd, add_direction, orthogonalize, project_out
from drtk.judges import KeywordJudge, is_refusal
from drtk.memory import keep_freed_memory
from drtk.models import ChatModel, load_model, save_pretrained

__all__ = [
    "ChatModel", "Direction", "DrtkError", "GenerationConfig", "KeywordJudge", "PromptSet", "SelectionConfig",
    "Site", "__version__", "ablation", "actadd", "add_direction", "compute_candidates", "find_direction",
    "generate", "is_refusal", "keep_freed_memory", "load_model", "load_prompts", "orthogonalize", "project_out",
    "save_pretrained", "split_prompts", "standard_splits",
]
