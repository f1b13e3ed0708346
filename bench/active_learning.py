"""Active learning: how many reviewer labels each queue order needs, on volumes with known labels.

A simulated reviewer labels a pool of generated head volumes in the order a queue strategy gives:
``random``, or ``uncertainty`` (highest first, the entropy qcloop's evaluations store and its
``uncertainty`` queue orders by: :func:`models.uncertainty.predictive_entropy` of the usable
probability over ``--mc-passes`` Monte-Carlo dropout passes of :func:`models.inference.dropout_copy`,
the network in evaluation mode with only its dropout active). Both orders start from the same
stratified ``--step`` labels; the network is retrained from scratch every ``--step`` labels and
scored in evaluation mode on a fixed held-out set (AUC). The figure of merit is the number of
labels each order needs to reach (within 0.005) the held-out AUC that ``random`` reaches with the
whole pool, on the curves averaged over ``--repeats`` pools, and (stricter) the labels from which the
curve stays there. Target: uncertainty <= 40% of the pool.

The volumes are brain phantoms (app/services/phantoms.py) of 32^3 voxels with faint ghosting
and Rician noise of random strength; a fraction ``--unusable`` of them (0.15 by default, as real QC
pools are mostly usable scans; 0.5 balances the classes) are unusable: their ghosting
severity is above ``--threshold``. Most volumes are far from the threshold (plainly clean or
plainly broken), a fraction ``--hard`` lies near it and decides the boundary: the situation of
a real QC pool, where most scans are easy calls. The network is MIQA's classifier family
(MONAI ``Classifier``, instance norm, dropout 0.2) sized for 32^3. Each retraining uses the same
seed and number of optimizer steps for both orders, with the learning rate decaying along a
cosine and clipped gradients, so a retraining does not collapse; ``--seeds`` > 1 averages the AUC
of several networks per retraining. A labelled set both orders share (the start, the whole pool)
is trained once. Every retraining's AUC is logged per pool and order, then the mean curves, the
run time and the load average; the learning curves go to ``--out``/active_learning.png.

    .venv/bin/python bench/active_learning.py [--pool 240] [--test 160] [--step 24] [--repeats 2]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import Classifier
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.services.phantoms import add_artifact, brain_phantom  # noqa: E402
from models.inference import dropout_copy  # noqa: E402
from models.uncertainty import predictive_entropy  # noqa: E402

log = logging.getLogger("bench.active_learning")
SHAPE = (32, 32, 32)
STRATEGIES = ("random", "uncertainty")
TOLERANCE = 0.005  # AUC: "reached" allows for the noise of retraining
GHOSTING_SCALE = 0.35  # faint ghosts: the boundary between usable and not is a matter of degree


def severities(rng: np.random.Generator, count: int, threshold: float, hard: float,
               unusable: float) -> np.ndarray:
    """Ghosting severities: a fraction ``unusable`` above the threshold (a QC pool is mostly usable scans),
    and in each class a fraction ``hard`` within 0.15 of the threshold, the rest plainly clean or plainly
    broken (most scans are easy calls)."""
    broken = rng.random(count) < unusable
    near = np.where(broken, rng.uniform(threshold, threshold + 0.15, count),
                    rng.uniform(threshold - 0.15, threshold, count))
    plain = np.where(broken, rng.uniform(min(1.0, threshold + 0.3), 1.0, count),
                     rng.uniform(0.0, max(0.0, threshold - 0.3), count))
    return np.where(rng.random(count) < hard, near, plain)


def make_volumes(count: int, seed: int, threshold: float, hard: float,
                 unusable: float) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` volumes (N, 1, 32, 32, 32) scaled 0..1 and their labels (1 = usable)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index, severity in enumerate(severities(rng, count, threshold, hard, unusable)):
        severity = float(severity)
        volume = brain_phantom(SHAPE, seed=seed * 100_000 + index)
        volume = add_artifact(volume, "ghosting", severity=max(severity * GHOSTING_SCALE, 1e-3), seed=index)
        volume = add_artifact(volume, "noise", severity=float(rng.uniform(0.2, 1.0)), seed=index + 1)
        volume = (volume - volume.min()) / max(float(volume.max() - volume.min()), 1e-6)
        images.append(torch.from_numpy(volume.astype(np.float32))[None])
        labels.append(0 if severity > threshold else 1)
    return torch.stack(images), np.array(labels)


def network() -> torch.nn.Module:
    """MIQA's classifier family, sized for 32^3, with the dropout that Monte-Carlo dropout needs."""
    return Classifier(in_shape=(1, *SHAPE), classes=1, channels=(8, 16, 32, 64), strides=(2, 2, 2, 2),
                      dropout=0.2)


def train(images: torch.Tensor, labels: np.ndarray, steps: int, seed: int, lr: float) -> torch.nn.Module:
    """A network trained from scratch on the labelled volumes for a fixed number of steps (batches of 8
    usable and 8 unusable volumes drawn with replacement, random flips; both classes are always labelled,
    as every order starts from a stratified set), so a small labelled set is not also a short training. The peak
    learning rate is high enough that every seed learns within the steps (at 3e-3 some seeds stayed near
    chance: the collapsed points of earlier curves), then decays to zero along a cosine with clipped
    gradients, so the network is not scored in the middle of a large step."""
    torch.manual_seed(seed)
    net = network()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    targets = torch.tensor(labels, dtype=torch.float32)[:, None]
    classes = [torch.from_numpy(np.flatnonzero(labels == value)) for value in (0, 1)]
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        batch = torch.cat([members[torch.randint(len(members), (8,), generator=generator)] for members in classes])
        x = images[batch]
        if torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(2)
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x), targets[batch]).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return net.eval()


def scores(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """The usable probability of each volume from the network in evaluation mode (as qcloop scores)."""
    with torch.inference_mode():
        return torch.cat([torch.sigmoid(net(images[s:s + 64])) for s in range(0, len(images), 64)])[:, 0].numpy()


def uncertainties(net: torch.nn.Module, images: torch.Tensor, passes: int, seed: int) -> np.ndarray:
    """Per volume, the predictive entropy over ``passes`` Monte-Carlo dropout passes, as qcloop's evaluation
    stores it and its ``uncertainty`` queue orders by: :func:`models.inference.dropout_copy` (evaluation
    mode, dropout active) and :func:`models.uncertainty.predictive_entropy`. Volumes go through in batches
    (each gets its own dropout masks); seeded, as the product seeds its passes."""
    stochastic = dropout_copy(net)
    if stochastic is None:
        raise ValueError("the network has no dropout: no Monte-Carlo dropout uncertainty")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        runs = np.stack([scores(stochastic, images) for _ in range(passes)])  # (passes, volumes)
    return np.array([predictive_entropy([[float(p)] for p in runs[:, volume]])[0] for volume in range(len(images))])


Trained = dict[tuple[int, ...], tuple[torch.nn.Module, float]]


def learning_curve(strategy: str, pool: tuple[torch.Tensor, np.ndarray], test: tuple[torch.Tensor, np.ndarray],
                   args: argparse.Namespace, seed: int, trained: Trained) -> list[tuple[int, float]]:
    """(labels, held-out AUC) after each retraining, labelling the pool in the strategy's order. ``trained``
    holds the network and AUC of each labelled set already trained on this pool: the same labels train the
    same network whatever their order (the stratified start and the whole pool are shared by both orders)."""
    images, labels = pool
    rng = np.random.default_rng(seed)
    first = np.concatenate([rng.choice(np.flatnonzero(labels == value), args.step // 2, replace=False)
                            for value in (0, 1)])  # the same stratified start for every order
    labelled = [int(i) for i in first]
    curve = []
    while True:
        key = tuple(sorted(labelled))
        if key not in trained:
            nets = [train(images[list(key)], labels[list(key)], args.steps, seed * 100 + k, args.lr)
                    for k in range(args.seeds)]
            trained[key] = nets[0], float(np.mean([roc_auc_score(test[1], scores(net, test[0])) for net in nets]))
        net, auc = trained[key]  # the first seed's network orders the queue, as one champion would
        curve.append((len(labelled), auc))
        left = np.setdiff1d(np.arange(len(labels)), labelled)
        if not len(left):
            return curve
        if strategy == "random":
            chosen = rng.permutation(left)[:args.step]
        else:
            entropy = uncertainties(net, images[left], args.mc_passes, seed)
            chosen = left[np.argsort(-entropy, kind="stable")[:args.step]]
        labelled.extend(int(i) for i in chosen)


def labels_needed(curve: list[tuple[int, float]], target: float) -> int:
    """The fewest labels after which the curve is within TOLERANCE of the target (the last point always is:
    with the whole pool labelled, every order trains the same network)."""
    return next(count for count, auc in curve if auc >= target - TOLERANCE)


def labels_to_stay(curve: list[tuple[int, float]], target: float) -> int | None:
    """The fewest labels from which every later point of the curve stays within TOLERANCE of the target (a
    stricter reading than :func:`labels_needed` on curves as noisy as single retrainings); None if it ends
    below it."""
    for index, (count, _) in enumerate(curve):
        if all(auc >= target - TOLERANCE for _, auc in curve[index:]):
            return count
    return None


def plot(curves: dict[str, np.ndarray], counts: np.ndarray, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for strategy, aucs in curves.items():
        axis.plot(counts, aucs, marker="o", label=strategy)
    axis.axhline(target, color="grey", linestyle="--", label=f"random, whole pool ({target:.3f})")
    axis.set_xlabel("labels")
    axis.set_ylabel("held-out AUC (usable)")
    axis.set_title("Queue order: labels against held-out AUC")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=240)
    parser.add_argument("--test", type=int, default=160)
    parser.add_argument("--step", type=int, default=24, help="labels between retrainings")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per retraining")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (cosine decay to zero)")
    parser.add_argument("--mc-passes", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.5, help="ghosting severity above which unusable")
    parser.add_argument("--hard", type=float, default=0.2, help="fraction of volumes near the threshold")
    parser.add_argument("--unusable", type=float, default=0.15, help="fraction of unusable volumes")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1, help="networks per retraining; the AUC is their mean")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads: one, as the machine is shared (two threads under load are slower)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    test = make_volumes(args.test, seed=999, threshold=args.threshold, hard=args.hard, unusable=args.unusable)
    curves: dict[str, list[list[tuple[int, float]]]] = {strategy: [] for strategy in STRATEGIES}
    for repeat in range(args.repeats):
        pool = make_volumes(args.pool, seed=repeat + 1, threshold=args.threshold, hard=args.hard,
                            unusable=args.unusable)
        trained: Trained = {}
        for strategy in STRATEGIES:
            curve = learning_curve(strategy, pool, test, args, seed=repeat, trained=trained)
            curves[strategy].append(curve)
            log.info("pool %d, %s: %s", repeat + 1, strategy, " ".join(f"{n}:{auc:.3f}" for n, auc in curve))
    counts = np.array([count for count, _ in curves["random"][0]])
    means = {strategy: np.mean([[auc for _, auc in curve] for curve in runs], axis=0)
             for strategy, runs in curves.items()}
    target = float(means["random"][-1])
    needed = {strategy: labels_needed(list(zip(counts.tolist(), means[strategy].tolist())), target)
              for strategy in STRATEGIES}
    figure = args.out / "active_learning.png"
    plot(means, counts, target, figure)
    log.info("command: %s", " ".join(sys.argv))
    log.info("pool %d volumes (%d held out), a retraining every %d labels, %d steps at lr %g, %d network(s) "
             "per retraining, %d MC-dropout passes, %d pools, %.0f s, load average %s", args.pool, args.test,
             args.step, args.steps, args.lr, args.seeds, args.mc_passes, args.repeats, time.perf_counter() - started,
             " ".join(f"{value:.2f}" for value in os.getloadavg()))
    for strategy in STRATEGIES:
        log.info("mean over pools, %-11s %s", strategy,
                 " ".join(f"{n}:{auc:.3f}" for n, auc in zip(counts.tolist(), means[strategy].tolist())))
    log.info("held-out AUC of random order with the whole pool (the target): %.3f", target)
    for strategy in STRATEGIES:
        curve = list(zip(counts.tolist(), means[strategy].tolist()))
        stays = labels_to_stay(curve, target)
        log.info("%-11s reaches it with %d labels (%.0f%% of the pool), stays there %s", strategy,
                 needed[strategy], 100 * needed[strategy] / args.pool,
                 f"from {stays} ({100 * stays / args.pool:.0f}%)" if stays is not None else "never")
    log.info("learning curves: %s", figure)


if __name__ == "__main__":
    main()
