"""The export edge: the only part of graphtag that imports torch.

torch and transformers come with the ``export`` extra (``pip install 'graphtag[export]'``);
without them everything else in graphtag works, and importing this package says what to
install instead of failing deep inside a module.
"""

import importlib.util

from graphtag.core.errors import MissingDependencyError

if importlib.util.find_spec("torch") is None:
    raise MissingDependencyError(
        "exporting and verifying PyTorch models needs torch, which is not installed: "
        "pip install 'graphtag[export]'"
    )
