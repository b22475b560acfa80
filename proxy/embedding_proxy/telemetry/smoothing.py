"""A moving average over a fixed window of regular samples: the autoscaling signal's smoothing."""

from __future__ import annotations

from collections import deque


class MovingAverage:
    """Mean of the last `size` samples (e.g. 100 samples taken every 0.1 s = a 10 s window).
    Before the window fills, the mean of the samples so far."""

    def __init__(self, size: int) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.total = 0.0

    def add(self, value: float) -> float:
        if len(self.samples) == self.samples.maxlen:
            self.total -= self.samples[0]
        self.samples.append(value)
        self.total += value
        return self.value

    @property
    def value(self) -> float:
        return self.total / len(self.samples) if self.samples else 0.0
