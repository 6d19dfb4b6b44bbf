"""Generation for every keraslm model: compiled sampling, beam search, streaming.

Everything here works on the one model contract (``init_cache`` and
``next(ids, cache, index)``, see :class:`keraslm.models.CausalLM`) and on
:mod:`keraslm.ops`; it knows no concrete model.
"""

from keraslm.generation.api import generate
from keraslm.generation.decode import make_sampling_loop, sampling_loop, step_coins
from keraslm.generation.stream import stream

__all__ = ["generate", "make_sampling_loop", "sampling_loop", "step_coins", "stream"]
