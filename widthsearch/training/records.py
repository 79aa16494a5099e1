"""Loss records: the lowest step losses of a supernet run with the sub-networks that gave them.

BCNetV2 (Su et al., arXiv 2203.13714) keeps the 100 lowest per-step losses with their width
configs and fits its search prior to them. Plain data in and out, so the records ride in the
checkpoint (``weights_only`` loads them) and survive ``--resume``.
"""
from __future__ import annotations

import heapq
from typing import Any, Mapping

from widthsearch.errors import UserError


class LossRecords:
    """The ``capacity`` lowest step losses of a run with their width configs (BCNetV2's records).

    A max-heap by loss keeps the lowest ones; plain data in and out for checkpoints.
    """

    def __init__(self, capacity: int = 100) -> None:
        if capacity < 1:
            raise UserError(f"the loss records need a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self._heap: list[tuple[float, int, dict[str, int]]] = []  # (-loss, arrival, config)
        self._count = 0

    def push(self, loss: float, config: Mapping[str, int]) -> None:
        item = (-float(loss), self._count, dict(config))
        self._count += 1
        if len(self._heap) < self.capacity:
            heapq.heappush(self._heap, item)
        elif item[0] > self._heap[0][0]:  # lower loss than the worst kept
            heapq.heapreplace(self._heap, item)

    def records(self) -> list[tuple[float, dict[str, int]]]:
        """(loss, config), lowest loss first."""
        return [(-neg, cfg) for neg, _, cfg in sorted(self._heap, key=lambda t: (-t[0], t[1]))]

    def __len__(self) -> int:
        return len(self._heap)

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "count": self._count,
                "records": [[-neg, arrival, cfg] for neg, arrival, cfg in self._heap]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self._count = int(state["count"])
        self._heap = [(-float(loss), int(arrival), {k: int(v) for k, v in cfg.items()})
                      for loss, arrival, cfg in state["records"]]
        heapq.heapify(self._heap)
