"""Configuration of the Differentiable Neural Computer memory (Graves et al., Nature 2016)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryConfig"]


@dataclass(frozen=True)
class MemoryConfig:
    """Sizes and switches of the external memory.

    :param memory_size: N, the number of memory slots (rows of the memory matrix ``M``).
    :param word_size: W, the width of a slot.
    :param num_read_heads: R, the number of read heads.
    :param num_write_heads: Hw, the number of write heads (DeepMind's ``num_writes``). Each write head
        has its own allocation, precedence and temporal link matrix; read modes are ordered
        ``[backward per write head, forward per write head, content]``.
    :param allocation: dynamic memory allocation (usage, free gates, retention, allocation weighting).
        When off, writes are content addressed only (the allocation gate is fixed to 0 and free gates
        to 0, so usage only decays by ``usage_decay``).
    :param temporal_links: the temporal link matrix ``L`` (N x N per write head) and the
        forward/backward read modes. When off nothing of size N x N is allocated and reads are content
        addressed only.
    :param usage_decay: a constant factor in (0, 1] multiplied into the retention vector ``psi`` at
        every step. 1.0 is the paper; < 1 gives the tutorial's decaying usage.
    :param epsilon: the epsilon of the cosine similarity and of the allocation sort.
    """

    memory_size: int = 16
    word_size: int = 16
    num_read_heads: int = 1
    num_write_heads: int = 1
    allocation: bool = True
    temporal_links: bool = True
    usage_decay: float = 1.0
    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("memory_size", "word_size", "num_read_heads", "num_write_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"MemoryConfig.{name} must be an int, got {value!r} ({type(value).__name__})")
            if value < 1:
                raise ValueError(f"MemoryConfig.{name} must be >= 1, got {value}")
        for name in ("allocation", "temporal_links"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"MemoryConfig.{name} must be a bool, got {value!r}")
        if not isinstance(self.usage_decay, (int, float)) or not 0.0 < float(self.usage_decay) <= 1.0:
            raise ValueError(f"MemoryConfig.usage_decay must be in (0, 1], got {self.usage_decay!r}")
        if not isinstance(self.epsilon, (int, float)) or not 0.0 < float(self.epsilon) < 1.0:
            raise ValueError(f"MemoryConfig.epsilon must be in (0, 1), got {self.epsilon!r}")

    @property
    def num_read_modes(self) -> int:
        """Number of read modes per read head: 2 * Hw + 1 (backward per write head, forward per write
        head, content)."""
        return 2 * self.num_write_heads + 1

    @classmethod
    def tutorial(
        cls, memory_size: int = 128, word_size: int = 64, num_read_heads: int = 4, usage_decay: float = 0.99
    ) -> MemoryConfig:
        """The tutorial's simple memory bank as a configuration of the DNC: content addressing only
        (no allocation, no temporal links) and a usage that decays by ``usage_decay`` per step."""
        return cls(
            memory_size=memory_size,
            word_size=word_size,
            num_read_heads=num_read_heads,
            num_write_heads=1,
            allocation=False,
            temporal_links=False,
            usage_decay=usage_decay,
        )
