"""A torch Dataset over cached, preprocessed arrays, and the DataLoader the loop uses.

Shuffling and augmentation depend only on (seed, epoch): ``make_loader`` is called once per epoch with the
epoch number, which is what makes training deterministic and resumable mid-run.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from age2hie_hub.train.augment import AugmentConfig, augment


class ArrayDataset(Dataset):
    """Cases as cache files (``.npy``, loaded lazily in the worker) or in-memory arrays, with targets.

    Returns ``(x float32 (C, X, Y, Z), target)``, target float32 (regression/binary) or int64 (classes).
    """

    def __init__(self, items: Sequence[str | Path | np.ndarray], targets: Sequence[float] | np.ndarray,
                 augment_config: AugmentConfig | None = None, seed: int = 0, in_memory: bool = False) -> None:
        if len(items) != len(targets):
            raise ValueError(f"{len(items)} inputs but {len(targets)} targets")
        self.items = [np.load(i) if in_memory and not isinstance(i, np.ndarray) else i for i in items]
        self.targets = np.asarray(targets)
        self.augment_config = augment_config
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[i]
        arr = item if isinstance(item, np.ndarray) else np.load(item)
        x = torch.from_numpy(np.asarray(arr, dtype=np.float32).copy())
        if self.augment_config is not None and self.augment_config.enabled:
            # One generator per (seed, epoch, case): independent of worker count and batch order.
            g = torch.Generator().manual_seed(hash_seed(self.seed, self.epoch, i))
            x = augment(x, g, self.augment_config)
        t = self.targets[i]
        target = torch.tensor(t, dtype=torch.int64 if self.targets.dtype.kind in "iu" else torch.float32)
        return x, target


def hash_seed(*parts: int) -> int:
    """Mix integers into a 63-bit seed (SeedSequence: well spread, unlike seed + epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def make_loader(dataset: ArrayDataset, *, batch_size: int, shuffle: bool, epoch: int = 0, seed: int = 0,
                workers: int = 0, distributed: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader for one epoch: order fixed by (seed, epoch); DistributedSampler under torchrun."""
    dataset.set_epoch(epoch)
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(hash_seed(seed, epoch, 17)))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
        # Workers' own torch/numpy seeds are irrelevant (augmentation uses explicit generators), but fix them
        # anyway so that any library randomness inside a worker is reproducible too.
        generator=torch.Generator().manual_seed(hash_seed(seed, epoch, 23)),
    )
