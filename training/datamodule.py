"""The LightningDataModule: cached preprocessed tensors per split, random transforms on train only."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from monai.data import DataLoader
from torch.utils.data import default_collate

from training.data import Dataset
from training.transforms import AugmentConfig, LabelledVolumes, PreprocessConfig, augment, cached_volumes


# Keep the preprocessed tensors in memory (not only on disk) when they fit in this many bytes.
IN_MEMORY_LIMIT = 4 * 1024**3


class QCDataModule(L.LightningDataModule):
    def __init__(self, dataset: Dataset, preprocess: PreprocessConfig, augmentation: AugmentConfig,
                 cache_dir: Path, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset, self.preprocess, self.augmentation = dataset, preprocess, augmentation
        self.cache_dir, self.batch_size, self.num_workers = Path(cache_dir), batch_size, num_workers
        voxels = 1
        for size in preprocess.spatial_size:
            voxels *= size
        self.in_memory = len(dataset.items) * voxels * 4 <= IN_MEMORY_LIMIT
        self.splits: dict[str, LabelledVolumes] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_transform = augment(self.dataset.outputs, self.augmentation, self.preprocess.spatial_dims)
        train_transform.set_random_state(seed=self.dataset.seed)
        for split in ("train", "val", "test"):
            items = self.dataset.split(split)
            volumes = cached_volumes(items, self.preprocess, self.cache_dir)
            self.splits[split] = LabelledVolumes(items, volumes, train_transform if split == "train" else None,
                                                 in_memory=self.in_memory)

    def warm_cache(self) -> None:
        """Preprocess every file once now (a missing or unreadable file fails here, before training)."""
        self.setup()
        for split in self.splits.values():
            for index in range(len(split)):
                split.image(index)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.dataset.seed)
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, generator=generator, collate_fn=default_collate,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
