"""Episodic sampling from an image dataset: splits, rotations, determinism, errors."""

import numpy as np
import pytest
import torch

from distmeta.data.dataset import DataError, from_arrays
from distmeta.tasks import TEST, TRAIN, VALIDATION, Episodes, split_classes
from distmeta.tasks.fewshot import with_rotations


@pytest.fixture(scope="module")
def noise():
    """12 classes of 6 random 1x8x8 images in 3 groups: every image (and rotation) is unique."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (72, 1, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(12), 6)[rng.permutation(72)]  # any row order on input
    return from_arrays(images, labels, [f"a{c // 4}/c{c}" for c in range(12)], [f"a{c // 4}" for c in range(12)])


def lookup(dataset):
    """Image bytes -> (class, quarter turns), over every image and rotation."""
    table = {}
    for image, label in zip(dataset.images, dataset.labels):
        for turns in range(4):
            table[np.ascontiguousarray(np.rot90(image, turns, axes=(-2, -1))).tobytes()] = (int(label), turns)
    return table


def origins(task, table):
    """(class, turns) of every support and query image, per episode label."""
    found = {}
    for x, y in [(task.support_x, task.support_y), (task.query_x, task.query_y)]:
        for image, label in zip((x * 255).round().to(torch.uint8).numpy(), y.tolist()):
            found.setdefault(label, []).append(table[image.tobytes()])
    return found


def test_rows_are_grouped_by_class(noise):
    assert (np.diff(noise.labels) >= 0).all()
    assert noise.class_counts.tolist() == [6] * 12 and noise.class_starts.tolist() == list(range(0, 72, 6))


@pytest.mark.parametrize("rotations", [False, True])
def test_an_episode_is_n_classes_of_k_plus_q_distinct_images(noise, rotations):
    classes = split_classes(noise, rotations=rotations)[TRAIN]
    episodes = Episodes(noise, classes, ways=4, shots=2, queries=3, rotations=rotations)
    table = lookup(noise)
    turns_seen = set()
    for seed in range(20):
        task = episodes.sample(seed)
        assert task.support_x.shape == (8, 1, 8, 8) and task.query_x.shape == (12, 1, 8, 8)
        assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        found = origins(task, table)
        assert sorted(found) == [0, 1, 2, 3]
        virtual = []
        for label, images in found.items():
            assert len(set(images)) == 1  # one class (and one rotation) per label
            (cls, turns), = set(images)
            virtual.append(cls * 4 + turns if rotations else cls)
            turns_seen.add(turns)
        assert len(set(virtual)) == 4 and set(virtual) <= set(classes.tolist())
        rows = [task.support_x, task.query_x]
        assert len({image.numpy().tobytes() for x in rows for image in x}) == 20  # no image twice
    assert turns_seen == ({0, 1, 2, 3} if rotations else {0})


def test_a_task_is_a_pure_function_of_its_seed(noise):
    episodes = Episodes(noise, np.arange(12), ways=3, shots=1, queries=2)
    same, other = episodes.sample(7), episodes.sample(8)
    assert all(torch.equal(a, b) for a, b in zip(same, episodes.sample(7)))
    assert not torch.equal(same.support_x, other.support_x)
    batch = episodes.sample_batch([7, 8])
    assert torch.equal(batch.index(1).query_x, other.query_x)


@pytest.mark.parametrize("by, sizes, expected", [
    ("class", [], (8, 1, 3)),            # 70/10/20 of 12 classes
    ("class", [5, 2, 5], (5, 2, 5)),
    ("group", [1, 1, 1], (4, 4, 4)),     # whole alphabets
])
@pytest.mark.parametrize("rotations", [False, True])
def test_splits_are_disjoint_and_whole(noise, by, sizes, expected, rotations):
    parts = split_classes(noise, by, sizes, rotations)
    scale = 4 if rotations else 1
    assert tuple(len(parts[s]) for s in (TRAIN, VALIDATION, TEST)) == tuple(scale * n for n in expected)
    ids = [set(parts[s].tolist()) for s in (TRAIN, VALIDATION, TEST)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    bases = [{c // scale for c in part} for part in ids]
    for base, part in zip(bases, ids):
        assert set(with_rotations(np.array(sorted(base))).tolist()) == part if rotations else base == part
        if by == "group":  # an alphabet never straddles two splits
            groups = [{noise.class_groups[c] for c in b} for b in bases]
            assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_bad_requests_name_the_problem(noise):
    with pytest.raises(DataError, match=r"5-way episodes need 5 classes; this split of the dataset has 3"):
        Episodes(noise, np.arange(3), ways=5)
    with pytest.raises(DataError, match=r"class 'a0/c0' of the dataset has 6 images, fewer than shots \+ queries = 7"):
        Episodes(noise, np.arange(12), ways=5, shots=2, queries=5)
    with pytest.raises(DataError, match=r"split_sizes \[2, 2, 2\] need 6 groups; the dataset has 3"):
        split_classes(noise, "group", [2, 2, 2])
    ungrouped = noise._replace(class_groups=("",) * 12)
    with pytest.raises(DataError, match=r"split_by=group, but the dataset has no groups \(use split_by=class\)"):
        split_classes(ungrouped, "group", [])
