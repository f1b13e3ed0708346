"""The LightningDataModule: cached preprocessed tensors per split, random transforms on train only.

Splits come from the dataset's items (``Item.split``); a cross-validation fold is a
:class:`Dataset` whose items carry that fold's train/test assignment. A tiled network
(MIQA's way) trains on one random tile-sized crop per volume and is evaluated on whole
volumes, one per batch, whose tiles the module averages.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from monai.data import DataLoader
from torch.utils.data import default_collate

from models.preprocessing import PreprocessConfig
from training.data import Dataset
from training.transforms import AugmentConfig, LabelledVolumes, augment, cached_volumes

# Keep the preprocessed tensors in memory (not only on disk) when they fit in this many bytes.
IN_MEMORY_LIMIT = 4 * 1024**3


class QCDataModule(L.LightningDataModule):
    def __init__(self, dataset: Dataset, preprocess: PreprocessConfig, augmentation: AugmentConfig,
                 cache_dir: Path, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset, self.preprocess, self.augmentation = dataset, preprocess, augmentation
        self.cache_dir, self.batch_size, self.num_workers = Path(cache_dir), batch_size, num_workers
        self.splits: dict[str, LabelledVolumes] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_transform = augment(self.dataset.outputs, self.augmentation, self.preprocess)
        train_transform.set_random_state(seed=self.dataset.seed)
        for split in ("train", "val", "test"):
            items = self.dataset.split(split)
            volumes = cached_volumes(items, self.preprocess, self.cache_dir)
            self.splits[split] = LabelledVolumes(items, volumes, train_transform if split == "train" else None,
                                                 in_memory=True)

    def warm_cache(self) -> None:
        """Preprocess every file once now (a missing or unreadable file fails here, before training);
        the tensors stay in memory unless they exceed IN_MEMORY_LIMIT together."""
        self.setup()
        held = 0
        for split in self.splits.values():
            for index in range(len(split)):
                held += split.image(index).numel() * 4
        if held > IN_MEMORY_LIMIT:
            for split in self.splits.values():
                split.memory = None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.dataset.seed)
        # Whole tiled volumes differ in shape: one per batch, the module averages their tiles.
        batch_size = 1 if self.preprocess.tiled and split != "train" else self.batch_size
        # a last training batch of one volume would break batch normalisation: leave it for the next epoch
        drop_last = split == "train" and len(self.splits[split]) % batch_size == 1 and len(self.splits[split]) > 1
        return DataLoader(self.splits[split], batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                          num_workers=self.num_workers, generator=generator, collate_fn=default_collate,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
