"""Training throughput: qcloop's loop against a bare Lightning loop, same cached tensors and network.

qcloop's loop is what ``training.train`` runs: the disk-cached tensors read through the
labelled dataset, the masked multi-task loss with class weights, per-epoch metrics,
early stopping, checkpointing, the progress reporter and the MLflow logger. The bare loop
is a LightningModule with plain BCE over the same tensors held in memory, with no logger,
checkpoint or callbacks. Only training batches are timed (from each epoch's first batch
start to its last batch end, first epoch left out as warm-up), so validation is excluded
from both. Prints volumes per second of each and their ratio (target >= 0.9).

    python bench/train_throughput.py --volumes 64 --size 32 --epochs 4 --arch resnet_small
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.networks import build_network  # noqa: E402
from tests.training.conftest import GHOSTING, ghosting_records  # noqa: E402
from training import tracking  # noqa: E402
from training.data import USABLE, LabelSettings, build_dataset  # noqa: E402
from training.datamodule import QCDataModule  # noqa: E402
from training.module import QCModule  # noqa: E402
from training.progress import ProgressReporter  # noqa: E402
from training.train import build_trainer  # noqa: E402
from models.preprocessing import PreprocessConfig  # noqa: E402
from training.transforms import AugmentConfig  # noqa: E402

NO_AUGMENT = AugmentConfig(flip_prob=0.0, affine_prob=0.0, noise_prob=0.0)


class BatchTimer(L.Callback):
    """Seconds spent in training batches per epoch (first batch start to last batch end)."""

    def __init__(self) -> None:
        self.windows: list[float] = []
        self.volumes: list[int] = []
        self._start = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            if trainer.accelerator.__class__.__name__ == "CUDAAccelerator":
                torch.cuda.synchronize()
            self._start, self._count = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._count += len(batch["image"] if isinstance(batch, dict) else batch[0])
        if batch_idx == trainer.num_training_batches - 1:
            if trainer.accelerator.__class__.__name__ == "CUDAAccelerator":
                torch.cuda.synchronize()
            self.windows.append(time.perf_counter() - self._start)
            self.volumes.append(self._count)

    def rate(self) -> float:
        return sum(self.volumes[1:]) / sum(self.windows[1:])


class BareModule(L.LightningModule):
    def __init__(self, net: torch.nn.Module, lr: float) -> None:
        super().__init__()
        self.net, self.lr = net, lr

    def training_step(self, batch, batch_idx):
        image, targets = batch
        return F.binary_cross_entropy_with_logits(self.net(image), targets)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--arch", default="resnet_small")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="qcloop-bench-"))
    shape = (args.size,) * 3
    dataset = build_dataset(ghosting_records(root / "volumes", args.volumes, shape=shape), [USABLE, GHOSTING],
                            LabelSettings(), seed=0, val_fraction=0.15, test_fraction=0.0)
    preprocess = PreprocessConfig(spatial_size=shape)
    data = QCDataModule(dataset, preprocess, NO_AUGMENT, root / "cache", args.batch_size)
    data.warm_cache()
    n_train = len(dataset.split("train"))

    # qcloop's loop (as training.train configures it).
    L.seed_everything(0, verbose=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.ensure_experiment(uri, "bench", str(root / "artifacts"))
    timer = BatchTimer()
    module = QCModule(build_network(args.arch, 2), [o.as_dict() for o in dataset.outputs], dataset.pos_weight())
    logger = tracking.make_logger(uri, "bench", "throughput", {})
    trainer, _ = build_trainer(args.epochs, args.accelerator, 1, "auto", logger, root, 100, [ProgressReporter(root), timer])
    trainer.fit(module, datamodule=data)
    qcloop_rate = timer.rate()

    # The bare loop: the same cached tensors in memory, the same network, plain BCE, nothing else.
    L.seed_everything(0, verbose=False)
    train_split = data.splits["train"]
    images = torch.stack([torch.as_tensor(train_split.volumes[i]["image"]) for i in range(len(train_split))])
    targets = torch.tensor([item.targets for item in dataset.split("train")], dtype=torch.float32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=args.batch_size,
                                         shuffle=True)
    timer = BatchTimer()
    bare = L.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=False,
                     enable_checkpointing=False, callbacks=[timer], enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(root))
    bare.fit(BareModule(build_network(args.arch, 2), 1e-3), loader)
    bare_rate = timer.rate()

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.accelerator != "cpu" else \
        f"CPU, {args.threads} threads"
    print(f"{args.arch} {args.size}^3, {n_train} training volumes, batch {args.batch_size}, {args.epochs} epochs "
          f"(first left out), {device}")
    print(f"qcloop loop: {qcloop_rate:.1f} volumes/s")
    print(f"bare loop:   {bare_rate:.1f} volumes/s")
    print(f"ratio:       {qcloop_rate / bare_rate:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
