"""Classify surnames by language with the RNN tutorial's character-level RNN, in eager mytorch.

This follows PyTorch's tutorial "Classifying Names with a Character-Level RNN": each name becomes
a sequence of one-hot letters (`F.one_hot` of the letters' indices), the tutorial's RNN reads them
one at a time from a zero hidden state, and the output of the last step (through LogSoftmax) is
the guess among 18 languages.

    python examples/names_classifier.py            # train with the defaults, then evaluate
    python examples/names_classifier.py --compile  # the same, training through compiled code
    python examples/names_classifier.py --quick    # a few iterations, to check that it runs

Threads (`--threads N`, default: this machine's cores): compiled training splits each batch into
N slices run at once (`mytorch.set_num_threads`): each slice's forward and backward on its own
rows, the slices' weight gradients summed, as data-parallel training does. Eager mode computes
with numpy, whose BLAS (OpenBLAS) already runs large products on every core by default
(OPENBLAS_NUM_THREADS sets how many); N does not change it. --compare runs both at that setting.

For each language, 10% of its distinct names are held out (same split whatever --seed is). The
metric is the balanced accuracy: the mean over languages of the accuracy on that language's
held-out names, so that Russian (9,340 names) and Vietnamese (71) count the same. Chance is 1/18.
"""

from __future__ import annotations

import argparse
import math
import os
import string
import sys
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

import numpy as np

import mytorch
from mytorch import Tensor, nn, optim
from mytorch.nn import functional as F

LETTERS = string.ascii_letters + " .,;'"
N_LETTERS = len(LETTERS)  # 57
LETTER_INDEX = {letter: i for i, letter in enumerate(LETTERS)}
_LETTER_OF_BYTE = np.zeros(128, np.int64)  # ASCII code -> index in LETTERS (names hold no other)
_LETTER_OF_BYTE[[ord(letter) for letter in LETTERS]] = np.arange(N_LETTERS)
DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "names"
TEST_FRACTION = 0.1
SPLIT_SEED = 0  # fixed: every training run is scored on the same held-out names


# --- data ------------------------------------------------------------------------------------


def to_ascii(name: str) -> str:
    """Strip accents and drop every character outside LETTERS ('Ślusàrski' -> 'Slusarski')."""
    decomposed = unicodedata.normalize("NFD", name)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn" and c in LETTER_INDEX)


def load_names(data_dir: str | Path) -> dict[str, list[str]]:
    """Read `<Language>.txt` files: {language: sorted distinct ASCII names}, languages sorted."""
    files = sorted(Path(data_dir).glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no <Language>.txt files in {data_dir}")
    names_by_language = {}
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        names = {to_ascii(line.strip()) for line in lines}
        names.discard("")
        names_by_language[path.stem] = sorted(names)
    return names_by_language


def split_names(
    names_by_language: dict[str, list[str]],
    fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Hold out `fraction` of each language's distinct names: (train, test) (name, language) pairs.

    A few hundred names belong to two languages (Scottish names are nearly all English ones too).
    A held-out name is removed from training in every language, so no name is in both sets.
    """
    rng = np.random.default_rng(seed)
    test = []
    for label, names in enumerate(names_by_language.values()):
        n_test = max(1, round(fraction * len(names)))
        chosen = rng.permutation(len(names))[:n_test]
        test += [(names[i], label) for i in sorted(chosen)]
    held_out = {name for name, _ in test}
    train = [
        (name, label)
        for label, names in enumerate(names_by_language.values())
        for name in names
        if name not in held_out
    ]
    return train, test


def letter_indices(names: list[str]) -> np.ndarray:
    """The index in LETTERS of every letter of equal-length names: a (length, batch) int64 array."""
    length = len(names[0])
    if any(len(name) != length for name in names):
        raise ValueError(f"names in one batch must have the same length, got {names}")
    codes = np.frombuffer("".join(names).encode("ascii"), np.uint8).reshape(len(names), length)
    return np.ascontiguousarray(_LETTER_OF_BYTE[codes].T)


def add_letter_noise(letters: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Replace each letter by a random ASCII letter with probability p (a training regularizer).

    `letters` are (length, batch) indices into LETTERS, whose first 52 are the ASCII letters."""
    if p <= 0:
        return letters
    replace = rng.random(letters.shape) < p
    noisy = letters.copy()
    noisy[replace] = rng.integers(0, len(string.ascii_letters), int(replace.sum()))
    return noisy


class LengthBucketSampler:
    """Draws batches of same-length names, each name distributed as the tutorial samples them.

    The tutorial picks a language uniformly, then one of its names. Here a length is drawn with
    the probability that this procedure yields a name of that length, then a batch of that
    length's names with their tutorial probabilities: every name in a batch is marginally a
    tutorial sample, and equal lengths need no padding.
    """

    def __init__(self, pairs: list[tuple[str, int]], n_languages: int, rng: np.random.Generator):
        self.pairs = pairs
        self.rng = rng
        per_language = np.bincount([label for _, label in pairs], minlength=n_languages)
        weights = np.array([1.0 / (n_languages * per_language[label]) for _, label in pairs])
        by_length = defaultdict(list)
        for i, (name, _) in enumerate(pairs):
            by_length[len(name)].append(i)
        self.buckets = [np.array(by_length[length]) for length in sorted(by_length)]
        self.bucket_weights = np.array([weights[b].sum() for b in self.buckets])
        self.bucket_weights /= self.bucket_weights.sum()
        self.name_weights = [weights[b] / weights[b].sum() for b in self.buckets]
        # rng.choice(p=...) checks p and sums it on every call; these are the cumulative
        # sums it would make, so the draws below are the ones it would give.
        self._bucket_cdf = _cdf(self.bucket_weights)
        self._name_cdfs = [_cdf(w) for w in self.name_weights]
        self._labels = np.array([label for _, label in pairs], dtype=np.int64)
        # Each bucket's names as columns of letter indices: a batch's letters are columns picked
        # from an array, not strings joined and looked up (51 -> 34 us a batch, measured alone).
        self._letters = [letter_indices([pairs[i][0] for i in b]) for b in self.buckets]

    def sample(self, batch: int) -> tuple[list[str], np.ndarray]:
        """A batch of same-length names and their language indices."""
        k, rows = self._draw(batch)
        picks = self.buckets[k][rows]
        return [self.pairs[i][0] for i in picks], self._labels[picks]

    def sample_letters(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The draw `sample` makes, as arrays: the names' letters (`letter_indices`), their
        language indices, and their positions in `pairs`."""
        k, rows = self._draw(batch)
        picks = self.buckets[k][rows]
        return self._letters[k][:, rows], self._labels[picks], picks

    def _draw(self, batch: int) -> tuple[int, np.ndarray]:
        """A length bucket, and the batch's positions in it."""
        k = int(self._bucket_cdf.searchsorted(self.rng.random(), side="right"))
        return k, self._name_cdfs[k].searchsorted(self.rng.random(batch), "right")


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = weights.cumsum()
    cdf /= cdf[-1]
    return cdf


# --- model: the tutorial's RNN class, as written in its cell In [7] ---------------------------


class RNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)

    def forward(self, input, hidden):
        combined = Tensor.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        hidden = mytorch.tanh(hidden)
        output = self.h2o(hidden)
        return output, hidden

    def __repr__(self):
        return f"RNN(input_size={self.input_size}, hidden_size={self.hidden_size}, output_size={self.output_size})"  # noqa: E501


def sequence_classifier(model: RNN):
    """The classifier as one function, which can be compiled: (length, batch) letter indices ->
    log-probabilities (batch, languages), the RNN run over the one-hot letters from h=0."""

    def run(letters: Tensor) -> Tensor:
        onehot = F.one_hot(letters, N_LETTERS).float()
        hidden = mytorch.zeros(letters.shape[1], model.hidden_size)
        for t in range(letters.shape[0]):
            output, hidden = model(onehot[t], hidden)
        return nn.LogSoftmax(dim=1)(output)

    return run


def sequence_loss(model: RNN):
    """The training objective as one function: (letters, labels) -> (loss, log-probabilities)."""
    run, criterion = sequence_classifier(model), nn.NLLLoss()

    def loss(letters: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        log_probs = run(letters)
        return criterion(log_probs, labels), log_probs

    return loss


# --- training and evaluation -----------------------------------------------------------------


def train(
    model: RNN,
    sampler: LengthBucketSampler,
    languages: list[str],
    *,
    iters: int,
    batch: int,
    lr: float,
    momentum: float,
    clip: float,
    noise: float,
    print_every: int,
    compiled: bool = False,
) -> float:
    """SGD on sampled batches, the learning rate decaying to 0 on a cosine; returns the seconds.

    With `compiled`, the forward and the loss run as native code built by `mytorch.compile`
    (once per name length), and `loss.backward()` runs the compiled backward graph.
    """
    loss_of = sequence_loss(model)
    if compiled:
        loss_of = mytorch.compile(loss_of)
    parameters = list(model.parameters())
    optimizer = optim.SGD(parameters, lr=lr, momentum=momentum)
    start = time.perf_counter()
    running_loss, running_steps = 0.0, 0
    for it in range(1, iters + 1):
        letters, labels, picks = sampler.sample_letters(batch)
        letters = add_letter_noise(letters, noise, sampler.rng)
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * it / iters))
        loss, log_probs = train_step(loss_of, optimizer, parameters, letters, labels, clip)
        running_loss += loss.item()
        running_steps += 1
        if it % print_every == 0 or it == iters:
            guess = int(log_probs.data[0].argmax())
            mark = "ok" if guess == labels[0] else f"wrong ({languages[labels[0]]})"
            name = sampler.pairs[picks[0]][0]
            print(
                f"{it:6d} {100 * it / iters:5.1f}% {time.perf_counter() - start:6.1f}s "
                f"loss {running_loss / running_steps:.4f}  {name} -> {languages[guess]} {mark}",
                flush=True,
            )
            running_loss, running_steps = 0.0, 0
    return time.perf_counter() - start


def train_step(loss_of, optimizer, parameters, letters, labels, clip: float):
    """One SGD step on a batch (letter indices, language indices): (loss, log-probabilities)."""
    targets = Tensor(labels, dtype=np.int64, trainable=False)
    loss, log_probs = loss_of(mytorch.from_numpy(letters), targets)
    optimizer.zero_grad()
    loss.backward()
    # A vanilla tanh RNN's gradient can spike on long names: clipping keeps SGD stable.
    nn.utils.clip_grad_norm_(parameters, clip)
    optimizer.step()
    return loss, log_probs


def predict(model: RNN, names: list[str], run=None) -> np.ndarray:
    """The predicted language index of every name (batched by length, no gradient).

    `run` maps letter indices to log-probabilities: the eager `sequence_classifier` by default,
    or a compiled one.
    """
    if run is None:
        run = sequence_classifier(model)
    predictions = np.empty(len(names), dtype=np.int64)
    by_length = defaultdict(list)
    for i, name in enumerate(names):
        by_length[len(name)].append(i)
    with mytorch.no_grad():
        for indices in by_length.values():
            letters = letter_indices([names[i] for i in indices])
            log_probs = run(mytorch.from_numpy(letters))
            predictions[indices] = log_probs.data.argmax(axis=1)
    return predictions


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(targets), np.asarray(predictions)), 1)
    return counts


def per_class_accuracy(counts: np.ndarray) -> np.ndarray:
    """Accuracy on each class's examples (the confusion matrix's diagonal over its row sums)."""
    totals = counts.sum(axis=1)
    if np.any(totals == 0):
        missing = np.flatnonzero(totals == 0).tolist()
        raise ValueError(f"classes {missing} have no examples: their accuracy is undefined")
    return np.diag(counts) / totals


def balanced_accuracy(targets: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """The mean of the per-class accuracies (every class counts the same, whatever its size)."""
    return float(per_class_accuracy(confusion_matrix(targets, predictions, n_classes)).mean())


def print_confusion_summary(counts: np.ndarray, languages: list[str]) -> None:
    """Per language: held-out names, accuracy, and the language most often guessed instead."""
    accuracies = per_class_accuracy(counts)
    print(f"{'language':<12} {'names':>5} {'accuracy':>8}  most often confused with")
    for i, language in enumerate(languages):
        wrong = counts[i].copy()
        wrong[i] = 0
        total = counts[i].sum()
        if wrong.sum() == 0:
            confused = "-"
        else:
            j = int(wrong.argmax())
            confused = f"{languages[j]} ({100 * wrong[j] / total:.0f}% of its names)"
        print(f"{language:<12} {total:5d} {100 * accuracies[i]:7.1f}%  {confused}")


def evaluate(
    model: RNN, test: list[tuple[str, int]], languages: list[str], run=None
) -> dict[str, object]:
    """Predict the held-out names: balanced accuracy, plain accuracy and the confusion matrix."""
    targets = np.array([label for _, label in test])
    predictions = predict(model, [name for name, _ in test], run)
    counts = confusion_matrix(targets, predictions, len(languages))
    return {
        "balanced_accuracy": float(per_class_accuracy(counts).mean()),
        "accuracy": float((predictions == targets).mean()),
        "confusion": counts,
    }


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=6000, help="training batches (default 6000)")
    parser.add_argument("--hidden", type=int, default=384, help="hidden size (default 384)")
    parser.add_argument(
        "--lr", type=float, default=0.05, help="initial learning rate (default 0.05)"
    )
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--batch", type=int, default=64, help="names per batch (default 64)")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (default 1)")
    parser.add_argument(
        "--noise", type=float, default=0.1, help="letter replacement probability (default 0.1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of <Language>.txt")
    parser.add_argument("--print-every", type=int, default=None, help="iterations per log line")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 100 iterations of a small model"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=cpu_count(),
        help="threads of compiled training calls (default: this machine's cores, as numpy's BLAS)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="train and evaluate with mytorch.compile (llvm backend): show its graph and speedup",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also train eagerly from the same seed, and report both runs side by side",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.hidden, args.batch = 100, 32, 16
    if args.iters < 1 or args.hidden < 1 or args.batch < 1 or args.threads < 1:
        parser.error("--iters, --hidden, --batch and --threads must be positive")
    if args.print_every is None:
        args.print_every = max(1, args.iters // 20)
    return args


def cpu_count() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def compare_compiled(model: RNN, test: list[tuple[str, int]]):
    """Compile the classifier, show one optimized graph, check it agrees, time it against eager."""
    compiled = mytorch.compile(sequence_classifier(model))
    names = [name for name, _ in test]
    start = time.perf_counter()
    first = predict(model, names, compiled)  # compiles once per name length
    cold = time.perf_counter() - start
    start = time.perf_counter()
    fast = predict(model, names, compiled)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    eager = predict(model, names)
    slow = time.perf_counter() - start
    agree = np.mean(first == eager)
    if agree < 0.999 or np.any(first != fast):
        raise AssertionError(f"compiled and eager predictions differ on {1 - agree:.2%} of names")
    with mytorch.no_grad():
        compiled(mytorch.from_numpy(letter_indices(["Satoshi"])))
    print("\nthe compiled classifier for one 7-letter name, after the passes:")
    print(compiled.graph)
    print(
        f"\nheld-out predictions: eager {slow:.2f}s, compiled {warm:.2f}s "
        f"({slow / warm:.1f}x faster; the first compiled pass, compiling each name length, "
        f"took {cold:.2f}s); predictions agree on {agree:.1%} of names"
    )
    return compiled


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    names_by_language = load_names(args.data)
    languages = list(names_by_language)
    train_pairs, test_pairs = split_names(names_by_language)
    print(
        f"{len(languages)} languages, {len(train_pairs)} training names, "
        f"{len(test_pairs)} held out ({TEST_FRACTION:.0%} of each language's distinct names)"
    )

    result = train_and_evaluate(args, train_pairs, test_pairs, languages, args.compile)
    if args.compare:
        print(f"\n--- the same run, {'eager' if args.compile else 'compiled'} ---")
        other = train_and_evaluate(args, train_pairs, test_pairs, languages, not args.compile)
        runs = (
            {"compiled": result, "eager": other}
            if args.compile
            else {"eager": result, "compiled": other}
        )
        print("\n            balanced accuracy  training time")
        for name, r in runs.items():
            print(f"{name:>10}  {100 * r['balanced_accuracy']:16.1f}%  {r['seconds']:12.1f}s")
        speedup = runs["eager"]["seconds"] / runs["compiled"]["seconds"]
        print(f"compiled training is {speedup:.1f}x faster")
        result["compare"] = runs
    return result


def train_and_evaluate(args, train_pairs, test_pairs, languages, compiled: bool) -> dict:
    """Train a fresh model from the seed (eagerly or compiled), then score it on held-out names."""
    mytorch.manual_seed(args.seed)
    model = RNN(N_LETTERS, args.hidden, len(languages))
    sampler = LengthBucketSampler(train_pairs, len(languages), np.random.default_rng(args.seed))
    how = f"compiled (llvm, {args.threads} threads)" if compiled else "eager"
    print(f"{model}, batch {args.batch}, lr {args.lr}, {args.iters} iterations, {how}")
    previous = mytorch.get_num_threads()
    mytorch.set_num_threads(args.threads)
    try:
        return _train_and_evaluate(args, model, sampler, test_pairs, languages, compiled, how)
    finally:
        mytorch.set_num_threads(previous)


def _train_and_evaluate(args, model, sampler, test_pairs, languages, compiled, how) -> dict:
    seconds = train(
        model,
        sampler,
        languages,
        iters=args.iters,
        batch=args.batch,
        lr=args.lr,
        momentum=args.momentum,
        clip=args.clip,
        noise=args.noise,
        print_every=args.print_every,
        compiled=compiled,
    )

    run = None
    if compiled:
        run = compare_compiled(model, test_pairs)
    result = evaluate(model, test_pairs, languages, run)
    print()
    print_confusion_summary(result["confusion"], languages)
    print()
    print(
        f"held-out balanced accuracy {100 * result['balanced_accuracy']:.1f}% "
        f"(chance {100 / len(languages):.1f}%), plain accuracy {100 * result['accuracy']:.1f}%, "
        f"{args.iters} iterations of {args.batch} names in {seconds:.0f}s ({how} training)"
    )
    result["seconds"] = seconds
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
