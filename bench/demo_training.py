"""How long the demo's first model takes to train, and what it learns, against other settings.

``make demo`` trains a model on the demo's reviewed history (32 phantom volumes, half with an
artifact) before the app starts, so its settings (``DEMO_TRAINING`` in app/services/demo.py)
trade the wait of a new user for the quality of the first suggestions. This builds a fresh demo
instance through the ``qcloop`` command (which trains with the demo's settings), then trains
the same history with each other setting given, and prints for each one the wall time and the
held-out usable AUC (3-fold cross-validation, as the demo runs it).

    python bench/demo_training.py                       # the demo's settings against MIQA's 64^3 classifier
    python bench/demo_training.py --other "--arch miqa --spatial-size 48,48,48"
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.demo_training")
DEMO_SETTINGS = "--arch resnet_small --spatial-size 32,32,32"  # app/services/demo.py's DEMO_TRAINING, as options
USABLE_AUC = re.compile(r"^\s+usable: (.+)$", re.MULTILINE)


def qcloop(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run one qcloop command; its wall time and output (it must succeed)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, encoding="utf-8")
    if result.returncode != 0:
        raise SystemExit(f"qcloop {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", action="append", default=None,
                        help="qcloop train options to compare (repeatable; default: the demo's own and MIQA's "
                             "classifier on 64^3)")
    parser.add_argument("--workdir", type=Path, help="keep the instance here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qcloop-demo-training-"))
    env = {**os.environ, "QCLOOP_INSTANCE_PATH": str(work / "instance"), "QCLOOP_ADMIN_PASSWORD": "bench-password-1",
           "DATABASE_URL": f"sqlite:///{work / 'instance' / 'qcloop.db'}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    qcloop(env, "db", "upgrade")
    seconds, out = qcloop(env, "demo")
    runs = [("the demo (make demo, building included)", seconds, out)]
    for other in args.other or [DEMO_SETTINGS, "--arch miqa --spatial-size 64,64,64"]:
        seconds, out = qcloop(env, "train", "--project", "Demo brain QC", "--inline", "--epochs", "10",
                              "--evaluation", "cv", "--folds", "3", *shlex.split(other))
        runs.append((other, seconds, out))
    log.info("cpu cores: %s; instance: %s", os.cpu_count(), work)
    for name, seconds, out in runs:
        auc = USABLE_AUC.search(out)
        log.info("%-60s %6.0f s  held-out usable AUC %s", name, seconds, auc.group(1) if auc else "(not printed)")


if __name__ == "__main__":
    main()
