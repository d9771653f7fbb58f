"""The names example: its data split, its metric, its encoding, and that its quick mode runs."""

from __future__ import annotations

import os
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import names_classifier as nc  # noqa: E402


@pytest.fixture(scope="module")
def names_by_language() -> dict[str, list[str]]:
    return nc.load_names(nc.DEFAULT_DATA)


def test_shipped_data_has_18_languages_and_attribution(names_by_language):
    assert len(names_by_language) == 18
    assert min(len(names) for names in names_by_language.values()) > 50
    assert (nc.DEFAULT_DATA / "LICENSE").is_file()
    assert "Sean Robertson" in (nc.DEFAULT_DATA / "README.md").read_text(encoding="utf-8")


def test_to_ascii_strips_accents_and_foreign_symbols():
    assert nc.to_ascii("Ślusàrski") == "Slusarski"
    assert nc.to_ascii("O'Néal") == "O'Neal"
    assert nc.to_ascii("Müller-Lüdenscheidt") == "MullerLudenscheidt"  # '-' is not a LETTER
    assert len(nc.LETTERS) == 57


def test_split_holds_out_ten_percent_of_each_language_and_no_name_twice(names_by_language):
    train, test = nc.split_names(names_by_language)
    held_out = Counter(label for _, label in test)
    for label, names in enumerate(names_by_language.values()):
        assert held_out[label] == round(0.1 * len(names)), names[:3]
    assert not {name for name, _ in train} & {name for name, _ in test}
    assert len(set(test)) == len(test)
    # Every name of every language is in one of the sets, unless it is held out elsewhere.
    held_out_names = {name for name, _ in test}
    pairs = {(n, label) for label, names in enumerate(names_by_language.values()) for n in names}
    assert {p for p in pairs if p[0] not in held_out_names} == set(train)


def test_split_is_fixed_and_seed_dependent(names_by_language):
    assert nc.split_names(names_by_language) == nc.split_names(names_by_language)
    _, other = nc.split_names(names_by_language, seed=1)
    assert other != nc.split_names(names_by_language)[1]


def test_balanced_accuracy_is_the_mean_of_per_language_accuracies():
    # Class 0: 3 of 4 right; class 1: 0 of 1; class 2: 2 of 2. Plain accuracy would be 5/7.
    targets = np.array([0, 0, 0, 0, 1, 2, 2])
    predictions = np.array([0, 0, 0, 2, 0, 2, 2])
    expected = (3 / 4 + 0 / 1 + 2 / 2) / 3
    assert nc.balanced_accuracy(targets, predictions, 3) == pytest.approx(expected)
    counts = nc.confusion_matrix(targets, predictions, 3)
    assert counts.tolist() == [[3, 0, 1], [1, 0, 0], [0, 0, 2]]
    with pytest.raises(ValueError, match="no examples"):
        nc.balanced_accuracy(targets, predictions, 4)


def test_letter_indices_are_one_per_letter_and_reject_mixed_lengths():
    letters = nc.letter_indices(["Abe", "Li."])
    assert letters.shape == (3, 2) and letters.dtype == np.int64
    assert letters.flags.c_contiguous  # (as compiled calls take their arguments)
    assert "".join(nc.LETTERS[i] for i in letters.T.ravel()) == "AbeLi."
    onehot = nc.F.one_hot(nc.mytorch.from_numpy(letters), nc.N_LETTERS).float().data
    assert onehot.shape == (3, 2, 57) and onehot.dtype == np.float32
    assert onehot.sum(axis=2).tolist() == [[1, 1], [1, 1], [1, 1]]
    assert onehot[2, 1, nc.LETTERS.index(".")] == 1
    with pytest.raises(ValueError, match="same length"):
        nc.letter_indices(["Abe", "Li"])


def test_sampler_draws_same_length_batches_with_uniform_languages(names_by_language):
    train, _ = nc.split_names(names_by_language)
    sampler = nc.LengthBucketSampler(train, 18, np.random.default_rng(0))
    seen = Counter()
    for _ in range(400):
        names, labels = sampler.sample(16)
        assert len({len(name) for name in names}) == 1
        seen.update(labels.tolist())
    # Languages are drawn uniformly (as in the tutorial), not in proportion to their size.
    shares = np.array([seen[label] for label in range(18)]) / sum(seen.values())
    assert shares.min() > 0.035 and shares.max() < 0.08, shares


def test_sampler_draws_what_rng_choice_draws(names_by_language):
    # The sampler keeps rng.choice's cumulative sums instead of re-checking p on every draw.
    train, _ = nc.split_names(names_by_language)
    sampler = nc.LengthBucketSampler(train, 18, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    for _ in range(50):
        names, labels = sampler.sample(8)
        k = rng.choice(len(sampler.buckets), p=sampler.bucket_weights)
        picks = rng.choice(sampler.buckets[k], size=8, p=sampler.name_weights[k])
        assert names == [train[i][0] for i in picks]
        assert labels.tolist() == [train[i][1] for i in picks]


def test_sampler_letters_are_the_sampled_names_letters(names_by_language):
    train, _ = nc.split_names(names_by_language)
    by_names = nc.LengthBucketSampler(train, 18, np.random.default_rng(3))
    by_letters = nc.LengthBucketSampler(train, 18, np.random.default_rng(3))
    for _ in range(50):
        names, labels = by_names.sample(8)
        letters, same_labels, picks = by_letters.sample_letters(8)
        assert letters.tolist() == nc.letter_indices(names).tolist()
        assert same_labels.tolist() == labels.tolist()
        assert [train[i][0] for i in picks] == names


def test_letter_noise_replaces_about_p_of_the_letters_with_ascii_letters():
    letters = nc.letter_indices(["Zz.'"] * 5000)
    noisy = nc.add_letter_noise(letters, 0.1, np.random.default_rng(0))
    changed = noisy != letters
    assert 0.09 < changed.mean() < 0.11
    assert (noisy[changed] < len(string.ascii_letters)).all()  # only letters come in
    assert letters.tolist() == nc.letter_indices(["Zz.'"] * 5000).tolist()  # input untouched
    assert nc.add_letter_noise(letters, 0.0, np.random.default_rng(0)) is letters


@pytest.mark.parametrize(
    "flags",
    [[], ["--compile", "--threads", "1"], ["--compile", "--threads", "2"]],
    ids=["eager", "compile", "compile_2_threads"],
)
def test_quick_mode_runs_and_reports_the_metric(flags):
    # this checkout's mytorch, not whichever one is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), *sys.path])}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "names_classifier.py"), "--quick", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "held-out balanced accuracy" in result.stdout
    assert "most often confused with" in result.stdout
    assert "Vietnamese" in result.stdout
    if flags:  # the example itself fails if compiled and eager predictions disagree
        assert "predictions agree on" in result.stdout
        assert "rnn_step" in result.stdout  # the optimized graph it prints has the fused step


def test_short_training_beats_chance_and_is_deterministic():
    def run():
        return nc.main(["--iters", "150", "--hidden", "32", "--batch", "32", "--print-every", "50"])

    first, second = run(), run()
    assert first["balanced_accuracy"] > 2 / 18  # chance is 1/18
    assert first["balanced_accuracy"] == second["balanced_accuracy"]
    assert np.array_equal(first["confusion"], second["confusion"])
