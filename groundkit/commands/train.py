"""``groundkit train --config CONFIG [key=value ...]``: train a model from a YAML experiment.

``CONFIG`` is a YAML file, or the name of a config shipped with groundkit (``ppmn_png``,
``ppmn_synthetic``, ...; ``.yaml`` optional): a file that exists wins. The YAML names its
``model_type`` (ppmn, drmn, panoptic, pbrec, vlnms) and has ``model``, ``data``, ``trainer`` and
``eval`` sections; ``key=value`` overrides any of them (``trainer.epochs=2``). Under
``torchrun --nproc_per_node N -m groundkit.cli train ...`` it trains with DistributedDataParallel.

SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption) finishes the current step, saves a resumable
state in ``trainer.out_dir`` and exits with 130 or 143 (as shells report those signals); the same
command with ``--resume`` then continues as if nothing happened. ``trainer.checkpoint_every_steps``
saves that state every N steps as well, for jobs that can be killed without warning.
"""
from __future__ import annotations

import argparse
import os
import sys

from groundkit.errors import TrainingInterrupted


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    from groundkit.config import shipped_configs

    parser.add_argument("--config", required=True,
                        help="experiment YAML: a path, or a shipped config by name: "
                             + ", ".join(shipped_configs()))
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config keys, e.g. trainer.epochs=2 model.rounds=1")
    parser.add_argument("--resume", action="store_true",
                        help="continue from trainer.out_dir/train_state.safetensors if present")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads of this process (trainer.threads; default: one per "
                             "core); give jobs that share a machine 1 each")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit.config import load_config, peek_value, resolve_config
    from groundkit.engine.tasks import task_of

    config = resolve_config(args.config)
    model_type = peek_value(config, args.overrides, "model_type", None)
    task = task_of(model_type, source=str(config))
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"trainer.threads={args.threads}")
    cfg = load_config(task.experiment_class(model_type), config, overrides)
    from groundkit._io import check_output_dir
    from groundkit.engine.distributed import resolve_device

    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 speaks for all
    if main_rank:  # the one that writes; before any data or model is made
        check_output_dir(cfg.trainer.out_dir, "trainer.out_dir")
    if cfg.trainer.device is not None:
        resolve_device(cfg.trainer.device)
    try:
        metrics = task.train(cfg, resume=args.resume)
    except TrainingInterrupted as e:
        if main_rank:
            print(f"groundkit train: {e}", file=sys.stderr)
        return e.exit_code
    if main_rank:
        print(f"trained {model_type}; checkpoint in {cfg.trainer.out_dir}")
        for name, value in metrics.items():
            print(f"  {name}: {value:.4f}")
    return 0
