"""`accelerate launch --config_file DEEPSPEED.yaml deepspeed_worker.py ARGS [--next ARGS ...]`: `plw train ARGS`
under DeepSpeed, once per `--next`-separated group, in the same processes (one launch, several runs).

Unlike FSDP, accelerate runs DeepSpeed on CPU as configured (DeepSpeed's CPU accelerator, gloo), so this
worker changes nothing; it only reports, per process, how the model came out of loading: under ZeRO-3
a `from_pretrained` model must be partitioned by `zero.Init` (placeholder parameters of shape [0] with
`ds_id`/`ds_numel`), the case in which plw's initial-weight snapshot has to gather.
"""

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def report_loading() -> None:
    import plw.train.run as run

    load = run._load_model

    def _load_model(config, tokenizer):
        model = load(config, tokenizer)
        params = list(model.parameters())
        row = {"rank": int(os.environ.get("RANK", "0")), "params": len(params),
               "partitioned": sum(hasattr(p, "ds_id") and p.numel() == 0 for p in params),
               "numel_held": sum(p.numel() for p in params),
               "numel_full": sum(getattr(p, "ds_numel", p.numel()) for p in params)}
        print("loaded", json.dumps(row), flush=True)
        if os.environ.get("PLW_LOAD_REPORT"):  # one file per process: stdout lines of 2 ranks interleave
            with open(f"{os.environ['PLW_LOAD_REPORT']}.{row['rank']}", "a") as f:
                f.write(json.dumps(row) + "\n")
        return model

    run._load_model = _load_model


def main(argv: list[str]) -> int:
    report_loading()
    from train_helpers import run_train_groups

    return run_train_groups(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
