"""Train the yardstick's judge once and write its weights into the package.

    python tools/train_judge.py                 # the shipped judge: dlbook/judge_mnist.pt
    python tools/train_judge.py --out /tmp/j.pt --epochs 1   # a trial that leaves dlbook alone

Trains :class:`dlbook.yardstick.Judge` on the 55,000 MNIST training images
(never the validation split, whose digits are the yardstick's real floor),
with random shifts of up to 2 pixels, Adam and a one-cycle learning rate,
through :func:`dlbook.fit` in float32 (``amp=False``), seed 0, on the CPU
with one thread, so that a rerun on the same machine writes the same bytes.
It prints the validation and test accuracy, the training time, the file's
size and its SHA-256, and the lines to paste into ``dlbook/yardstick.py``
(``JUDGE_SHA256``, ``JUDGE_VAL_ACC``, ``JUDGE_TEST_ACC``): until they are
pasted, ``yardstick.load_judge`` refuses the new file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: tools/ is on the path, the checkout is not
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import dlbook  # noqa: E402
from dlbook import data, yardstick  # noqa: E402
from dlbook.io import atomic_write_bytes  # noqa: E402

EPOCHS = 3
BATCH_SIZE = 128
MAX_LR = 3e-3
MAX_SHIFT = 2


def _shift(x: torch.Tensor) -> torch.Tensor:
    return data.random_shift(x, MAX_SHIFT)


def train(epochs: int = EPOCHS, seed: int = 0) -> tuple[yardstick.Judge, dict]:
    """A judge trained on the training split, with its accuracies and training time."""
    dlbook.seed_everything(seed)
    x, y = data.load_images("mnist", "train", normalize=False)  # (55000, 1, 28, 28) in [0, 1]
    xv, yv = data.load_images("mnist", "val", normalize=False)
    xt, yt = data.load_images("mnist", "test", normalize=False)
    train_loader = data.BatchLoader(x, y, batch_size=BATCH_SIZE, shuffle=True, transform=_shift)
    val_loader = data.BatchLoader(xv, yv, batch_size=1000)
    test_loader = data.BatchLoader(xt, yt, batch_size=1000)
    judge = yardstick.Judge()
    optimizer = torch.optim.Adam(judge.parameters(), lr=MAX_LR)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR,
                                                    total_steps=epochs * len(train_loader))
    start = time.perf_counter()
    history = dlbook.fit(judge, train_loader, optimizer=optimizer, scheduler=scheduler,
                         epochs=epochs, evals={"val": val_loader}, device="cpu", amp=False,
                         desc="judge")
    seconds = time.perf_counter() - start
    judge.eval()
    test = dlbook.evaluate(judge, test_loader, device="cpu", amp=False)  # once, at the end
    return judge, {"val_acc": history.last["val_acc"], "test_acc": test["acc"],
                   "seconds": seconds}


def weights_bytes(judge: yardstick.Judge) -> bytes:
    """The judge's state dict as ``torch.save`` writes it."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in judge.state_dict().items()}, buffer)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=yardstick.JUDGE_PATH,
                        help="where to write the weights (default: the package's judge_mnist.pt)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: the same bytes on every rerun)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    judge, found = train(args.epochs)
    blob = weights_bytes(judge)
    atomic_write_bytes(args.out, blob)
    sha = hashlib.sha256(blob).hexdigest()
    print(f"validation accuracy {found['val_acc']:.4f} | test accuracy {found['test_acc']:.4f} | "
          f"{args.epochs} epochs in {found['seconds']:.0f} s on {args.threads} thread(s)")
    print(f"wrote {args.out} ({len(blob):,} bytes), SHA-256 {sha}")
    print("paste into dlbook/yardstick.py:")
    print(f'JUDGE_SHA256 = "{sha}"')
    print(f"JUDGE_VAL_ACC = {found['val_acc']:.4f}")
    print(f"JUDGE_TEST_ACC = {found['test_acc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
