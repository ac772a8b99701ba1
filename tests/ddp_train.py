"""Run by tests/test_finetune.py under ``torchrun``: the notebook's functions (build_trainer, run_training)
unchanged, with the collator wrapped to record which rows each rank was given."""

import json
import os
import sys

from whispersg.finetune.train import TrainingSettings, build_trainer, run_training


def main(dataset: str, base_model: str, output_dir: str, record_dir: str) -> None:
    settings = TrainingSettings(datasets=[dataset], output_dir=output_dir, base_model=base_model, batch_size=2,
                                effective_batch_size=2, max_steps=3, save_steps=3, eval_steps=3, warmup_steps=0,
                                learning_rate=1e-3, optim="adamw_torch", generation_max_length=10, report_to=["none"])
    trainer = build_trainer(settings)
    collate, batches = trainer.data_collator, []

    def recording(rows):
        batches.append([row["audio"]["path"] for row in rows])
        return collate(rows)

    trainer.data_collator = recording
    run_training(trainer, settings)
    rank = os.environ.get("RANK", "0")
    with open(os.path.join(record_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"batches": batches, "world_size": trainer.args.world_size,
                   "main": trainer.is_world_process_zero()}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
