"""Run by test_training_ddp.py under `accelerate launch`: a few refusal-training steps, weights saved by rank 0."""

import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_training_loop import _cfg, _data  # noqa: E402

from drtk.models import load_model  # noqa: E402
from drtk.training import Trainer  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    model = load_model("drtk-tiny-chat")
    trainer = Trainer(model, _data(), _cfg("refusal", steps=2, lora=False, micro_batch_size=1, lr=1e-3))
    trainer.train()
    if trainer.accelerator.is_main_process:
        save_file({n: p.detach().contiguous() for n, p in model.hf.named_parameters()}, sys.argv[1])
        trainer.history.to_csv(sys.argv[1] + ".csv", index=False)
