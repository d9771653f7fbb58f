"""The names example's training step, eager against compiled, timed in alternating blocks.

`examples/names_classifier.py --compile --compare` times the two training runs one after the
other, so a change of the host's speed between them (this machine has slow phases) moves the
ratio it prints. Here both train from the same seed on the same batches, in blocks of steps that
alternate (eager, compiled, eager, ...), so both see the same phases; the ratio of the median
block times is the steady-state speedup of a step. Compiling every name length is done first
and reported on its own. Before timing, the first steps' losses must agree.

    python -m bench.names                      # 20 rounds of 50 steps each way
    python -m bench.names --rounds 4 --block 20
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import mytorch
from bench.common import (
    REPO,
    header_lines,
    machine_facts,
    markdown_table,
    set_mytorch_threads,
    write_json,
)
from mytorch import optim

AGREE_STEPS = 3
AGREE_RTOL = 1e-3  # float32 sums in another order, over a few SGD steps
SETTLE_S = 0.3  # a pause before each compiled block on more than one thread


def load_example():
    """examples/names_classifier.py as a module (examples/ is no package)."""
    path = REPO / "examples" / "names_classifier.py"
    spec = importlib.util.spec_from_file_location("names_classifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Trainer:
    """One model trained with the example's `train_step` and `settings` (its command line's:
    SGD with momentum, clipping; the learning rate not decayed), eagerly or through
    `mytorch.compile`; `step(letters, labels)` returns the loss."""

    def __init__(self, nc, settings, hidden: int, languages: int, compiled: bool, seed: int):
        self.nc, self.settings = nc, settings
        mytorch.manual_seed(seed)
        model = nc.RNN(nc.N_LETTERS, hidden, languages)
        loss_of = nc.sequence_loss(model)
        self.loss_of = mytorch.compile(loss_of) if compiled else loss_of
        self.params = list(model.parameters())
        self.optimizer = optim.SGD(
            self.params, lr=self.settings.lr, momentum=self.settings.momentum
        )

    def step(self, letters: np.ndarray, labels: np.ndarray) -> float:
        loss, _ = self.nc.train_step(
            self.loss_of, self.optimizer, self.params, letters, labels, self.settings.clip
        )
        return loss.item()


def draw_batches(nc, names, noise: float, count: int, batch: int, seed: int) -> list[tuple]:
    """`count` training batches as the example draws them (letter noise included)."""
    train, _ = nc.split_names(names)
    sampler = nc.LengthBucketSampler(train, len(names), np.random.default_rng(seed))
    batches = []
    for _ in range(count):
        letters, labels, _ = sampler.sample_letters(batch)
        batches.append((nc.add_letter_noise(letters, noise, sampler.rng), labels))
    return batches


def run(args) -> dict:
    nc = load_example()
    settings = nc.parse_args([])  # the example's defaults
    names = nc.load_names(nc.DEFAULT_DATA)
    batches = draw_batches(
        nc, names, settings.noise, args.rounds * args.block, args.batch, args.seed
    )
    eager, compiled = (
        Trainer(nc, settings, args.hidden, len(names), compiled=way, seed=args.seed)
        for way in (False, True)
    )

    for k, (letters, labels) in enumerate(batches[:AGREE_STEPS]):
        want, got = eager.step(letters, labels), compiled.step(letters, labels)
        if not math.isclose(got, want, rel_tol=AGREE_RTOL):
            raise SystemExit(f"error: step {k}: compiled loss {got} != eager loss {want}")

    # Compile every length in the batches (one step of a batch of each, not timed as steps).
    lengths = {}
    for letters, labels in batches:
        lengths.setdefault(letters.shape[0], (letters, labels))
    start = time.perf_counter()
    for letters, labels in lengths.values():
        compiled.step(letters, labels)
    compile_s = time.perf_counter() - start

    times = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        block = batches[r * args.block : (r + 1) * args.block]
        for name, trainer in (("eager", eager), ("compiled", compiled)):
            if name == "compiled" and mytorch.get_num_threads() > 1:
                # After eager's last product, OpenBLAS's threads spin for ~0.13 s before they
                # sleep, on the core the compiled calls' second thread needs: let them sleep.
                # (Only then: a pause makes the next steps slower on one thread, 1.13x here.)
                time.sleep(SETTLE_S)
            start = time.perf_counter()
            for letters, labels in block:
                trainer.step(letters, labels)
            times[name].append((time.perf_counter() - start) / len(block))
    return {"times": times, "compile_s": compile_s, "lengths": sorted(lengths)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="blocks each way (default 20)")
    parser.add_argument("--block", type=int, default=50, help="steps per block (default 50)")
    parser.add_argument("--hidden", type=int, default=384, help="hidden size (default 384)")
    parser.add_argument("--batch", type=int, default=64, help="names per batch (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="compiled calls' threads (default: cores)"
    )
    parser.add_argument("--json", type=Path, default=None, help="default: bench/results/")
    args = parser.parse_args(argv)
    if min(args.rounds, args.block, args.hidden, args.batch) < 1:
        parser.error("--rounds, --block, --hidden and --batch must be positive")
    args.threads = args.threads or len(os.sched_getaffinity(0))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    args.json = args.json or REPO / "bench" / "results" / f"names-{stamp}.json"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    facts = machine_facts() | {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": "not used",
        "mytorch_set_num_threads": set_mytorch_threads(args.threads),
    }
    result = run(args)
    eager, compiled = (statistics.median(result["times"][k]) for k in ("eager", "compiled"))
    lines = header_lines("names training step, eager vs compiled", facts, args.threads)
    lines += [
        f"- H={args.hidden}, batch {args.batch}; {args.rounds} rounds of {args.block} steps each"
        f" way, alternating; eager numpy's BLAS at its own threads",
        f"- compiling {len(result['lengths'])} name lengths first: {result['compile_s']:.2f} s",
        "",
        markdown_table(
            ["implementation", "median step", "fastest block", "slowest block"],
            [
                [
                    name,
                    f"{statistics.median(t) * 1e3:.3f} ms",
                    f"{min(t) * 1e3:.3f} ms",
                    f"{max(t) * 1e3:.3f} ms",
                ]
                for name, t in result["times"].items()
            ],
        ),
        "",
        f"compiled steps run {eager / compiled:.2f}x faster than eager ones"
        " (medians of alternating blocks)",
    ]
    print("\n".join(lines))
    write_json(
        args.json,
        {
            "facts": facts,
            "args": {k: str(v) for k, v in vars(args).items()},
            **result,
            "speedup": eager / compiled,
        },
    )
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
