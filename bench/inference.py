"""Scoring throughput: qcloop's inference engine against MIQA's way, same volumes, same weights.

MIQA's way (``models/miqa_reference.py``, as ``miqa/learning/nn_inference.py`` runs it): each
volume read, reoriented and min-max scaled, then its 64^3 tiles sent through the network one at
a time, nothing kept.
qcloop's engine as an evaluation job runs it (``Engine.score_files``): the version loaded once
and traced, tiles batched, the next file read and preprocessed in a background thread while the
network scores the current one, preprocessed tensors cached on disk by file identity (an
evaluation job after a promotion, or a second version with the same preprocessing, reads them
back), torch threads from the setting.

Volumes: the MNI152 1 mm brain (197 x 233 x 189, 48 tiles) with different noise per copy, so
each is its own file. Prints volumes per second of each way, their ratio (cold: the engine's
first pass fills its cache; warm: a second pass, as a re-scoring job sees), and the largest
difference between the two ways' scores.

    .venv/bin/python bench/inference.py [--volumes 6] [--threads 2] [--batch 8]
"""
from __future__ import annotations

import argparse
import functools
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import miqa_reference  # noqa: E402
from models.inference import Engine, miqa_published  # noqa: E402
from models.networks import MIQA_OUTPUTS, build_network  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
MNI = SHARED / "mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
WEIGHTS = SHARED / "miqa-weights" / "miqaT1-val0.pth"
log = logging.getLogger("bench.inference")


def make_volumes(folder: Path, count: int) -> list[Path]:
    image = nib.load(str(MNI))
    data = np.asarray(image.dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        noisy = np.clip(data + rng.normal(0, 3, data.shape), 0, 255).astype(np.uint8)
        path = folder / f"mni-{index}.nii.gz"
        nib.save(nib.Nifti1Image(noisy, image.affine), str(path))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mc-passes", type=int, default=0,
                        help="Monte-Carlo dropout passes per volume, as evaluation jobs make (QCLOOP_MC_DROPOUT_PASSES)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="qcloop-bench-inference-"))
    try:
        paths = make_volumes(work, args.volumes)
        net = build_network("miqa", len(MIQA_OUTPUTS))
        net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        net.eval()
        miqa_reference.scores(paths[0], net)  # warm-up of both ways (first-call allocations)
        start = time.perf_counter()
        reference = [miqa_reference.scores(path, net) for path in paths]
        miqa_s = time.perf_counter() - start

        engine = Engine("sqlite://", work / "cache", threads=args.threads, batch=args.batch, mc_passes=args.mc_passes)
        model = miqa_published(WEIGHTS)
        model.score(str(paths[0]))
        timings, scores = [], None
        for _ in ("cold", "warm"):
            start = time.perf_counter()
            files = ((functools.partial(str, path), f"bench-{index}") for index, path in enumerate(paths))
            scores = list(engine.score_files(model, files))
            timings.append(time.perf_counter() - start)
        difference = max(abs(ours.scores[key] - theirs[key]) for ours, theirs in zip(scores, reference)
                         for key in theirs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = args.volumes
    log.info("command: %s", " ".join(sys.argv))
    log.info("%d MNI-sized volumes (197x233x189, 48 tiles each), MIQA T1 weights, %d torch threads, batch %d, "
             "%d Monte-Carlo dropout passes", n, args.threads, args.batch, args.mc_passes)
    log.info("MIQA's way (one volume at a time, tiles one by one, no cache): %.3f volumes/s (%.2f s)", n / miqa_s, miqa_s)
    log.info("qcloop engine, cold (cache filled on the way): %.3f volumes/s (%.2f s), ratio %.2fx",
             n / timings[0], timings[0], miqa_s / timings[0])
    log.info("qcloop engine, warm (preprocessed tensors cached): %.3f volumes/s (%.2f s), ratio %.2fx",
             n / timings[1], timings[1], miqa_s / timings[1])
    log.info("largest score difference between the two ways: %.2e", difference)


if __name__ == "__main__":
    main()
