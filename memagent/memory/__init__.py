"""memagent.memory: the Differentiable Neural Computer (Graves et al., Nature 2016).

- :class:`MemoryConfig` -- sizes and switches (``MemoryConfig.tutorial()`` is the tutorial's bank).
- :mod:`memagent.memory.addressing` -- one pure function per mechanism of the paper.
- :class:`MemoryAccess`, :class:`MemoryState`, :class:`Interface`, :func:`parse_interface`.
- :class:`DNC`, :class:`DNCState` -- the LSTM-controlled DNC.
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
