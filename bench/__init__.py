"""Maskbench: compare masked-modelling self-supervised strategies on equal terms."""

import os

__version__ = "0.1.0"

# The inductor cache folder the user chose, read before anything imports timm (whose import
# makes torch set its own default there); bench.runtime.compiling gives sweeps theirs otherwise.
USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
