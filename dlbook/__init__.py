"""dlbook: the helper package of the executable deep-learning book.

The notebooks start with::

    import dlbook
    env = dlbook.setup(seed=0)
"""

from ._version import __version__

from . import bench, data, exercises, plot, results, stats, train  # noqa: E402
from .claims import ClaimError, claim  # noqa: E402
from .device import amp_dtype, autocast, get_device, grad_scaler, loader_kwargs  # noqa: E402
from .env import seed_everything, setup  # noqa: E402
from .profiles import budget, get_profile, is_smoke  # noqa: E402
from .train import EMA, evaluate, fit, predictions, supervised  # noqa: E402

__all__ = [
    "EMA", "ClaimError", "__version__", "amp_dtype", "autocast", "bench", "budget", "claim", "data", "evaluate",
    "exercises", "fit",
    "get_device", "get_profile", "grad_scaler", "is_smoke", "loader_kwargs", "plot", "predictions", "results",
    "seed_everything", "setup", "stats", "supervised", "train",
]
