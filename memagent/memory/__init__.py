"""memagent.memory: the Differentiable Neural Computer (Graves et al., Nature 2016).

- :class:`MemoryConfig` -- sizes and switches (``MemoryConfig.tutorial()`` is the tutorial's bank).
- :mod:`memagent.memory.addressing` -- one pure function per mechanism of the paper.
- :class:`MemoryAccess`, :class:`MemoryState`, :class:`Interface`, :func:`parse_interface`.
- :class:`DNC`, :class:`DNCState` -- the LSTM-controlled DNC.
- :mod:`memagent.memory.native` -- the native CPU kernel (C, built at first use) that runs the
  one-write-head DNC on CPU; ``MEMAGENT_NATIVE=0`` switches it off, ``native.available()`` tells.
"""

from memagent.memory.access import (
    Interface,
    InterfaceLayer,
    MemoryAccess,
    MemoryState,
    interface_size,
    parse_interface,
)
from memagent.memory.config import MemoryConfig
from memagent.memory.dnc import DNC, DNCState

__all__ = [
    "DNC",
    "DNCState",
    "Interface",
    "InterfaceLayer",
    "MemoryAccess",
    "MemoryConfig",
    "MemoryState",
    "interface_size",
    "parse_interface",
]
