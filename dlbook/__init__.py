"""dlbook: the helper package of the executable deep-learning book.

The notebooks start with::

    import dlbook
    env = dlbook.setup(seed=0)
"""

__version__ = "0.1.0"

from . import data, exercises, plot, results, train  # noqa: E402
from .device import amp_dtype, autocast, get_device, grad_scaler, loader_kwargs  # noqa: E402
from .env import seed_everything, setup  # noqa: E402
from .profiles import budget, get_profile, is_smoke  # noqa: E402
from .train import evaluate, fit  # noqa: E402

__all__ = [
    "__version__", "amp_dtype", "autocast", "budget", "data", "evaluate", "exercises", "fit",
    "get_device", "get_profile", "grad_scaler", "is_smoke", "loader_kwargs", "plot", "results",
    "seed_everything", "setup", "train",
]
