"""Streaming indicators, one value per update, the same as the Rust SDK's.

Each gives `None` until its window is full. The arithmetic follows
`guest-sdk/src/indicators.rs` operation for operation, so the results agree
with the Rust ones to rounding (the tests hold them to 1e-9 on the bundled
data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional


class Ema:
    """Exponential moving average, seeded with the simple mean of the
    first `period` values (as TA-Lib and pandas' `adjust=False` after a
    seed)."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("Ema period must be at least 1")
        self.period = period
        self._alpha = 2.0 / (float(period) + 1.0)
        self._seen = 0
        self._seed_sum = 0.0
        self.value: Optional[float] = None

    def update(self, x: float) -> Optional[float]:
        if self.value is not None:
            self.value = self.value + self._alpha * (x - self.value)
        else:
            self._seed_sum += x
            self._seen += 1
            if self._seen == self.period:
                self.value = self._seed_sum / float(self.period)
        return self.value


class Sma:
    """Simple moving average over the last `period` values."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("Sma period must be at least 1")
        self.period = period
        self._buf: List[float] = []
        self._next = 0
        self._sum = 0.0

    def update(self, x: float) -> Optional[float]:
        if len(self._buf) < self.period:
            self._buf.append(x)
            self._sum += x
        else:
            old = self._buf[self._next]
            self._buf[self._next] = x
            self._sum += x - old
        self._next = (self._next + 1) % self.period
        if self._next == 0:
            # Re-summed once per lap, as in Rust, so rounding error stays bounded.
            total = 0.0
            for v in self._buf:
                total += v
            self._sum = total
        return self.value

    @property
    def value(self) -> Optional[float]:
        if len(self._buf) == self.period:
            return self._sum / float(self.period)
        return None


class Atr:
    """Average true range with Wilder's smoothing, seeded with the mean of
    the first `period` true ranges; a gap from the previous close counts."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("Atr period must be at least 1")
        self.period = period
        self._prev_close: Optional[float] = None
        self._seen = 0
        self._seed_sum = 0.0
        self.value: Optional[float] = None

    def update(self, high: float, low: float, close: float) -> Optional[float]:
        rng = high - low
        if self._prev_close is None:
            tr = rng
        else:
            pc = self._prev_close
            tr = max(max(rng, abs(high - pc)), abs(low - pc))
        self._prev_close = close
        n = float(self.period)
        if self.value is not None:
            self.value = (self.value * (n - 1.0) + tr) / n
        else:
            self._seed_sum += tr
            self._seen += 1
            if self._seen == self.period:
                self.value = self._seed_sum / n
        return self.value


class Rsi:
    """Relative strength index with Wilder's smoothing."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("Rsi period must be at least 1")
        self.period = period
        self._prev_close: Optional[float] = None
        self._changes = 0
        self._avg_gain = 0.0
        self._avg_loss = 0.0
        self.value: Optional[float] = None

    def update(self, close: float) -> Optional[float]:
        prev = self._prev_close
        self._prev_close = close
        if prev is None:
            return None
        change = close - prev
        gain = max(change, 0.0)
        loss = max(-change, 0.0)
        n = float(self.period)
        if self.value is not None:
            self._avg_gain = (self._avg_gain * (n - 1.0) + gain) / n
            self._avg_loss = (self._avg_loss * (n - 1.0) + loss) / n
        else:
            # Running sums during warm-up, means once the window is full.
            self._avg_gain += gain
            self._avg_loss += loss
            self._changes += 1
            if self._changes < self.period:
                return None
            self._avg_gain /= n
            self._avg_loss /= n
        if self._avg_loss == 0.0:
            rsi = 100.0
        else:
            rsi = 100.0 - 100.0 / (1.0 + self._avg_gain / self._avg_loss)
        self.value = rsi
        return self.value


@dataclass(frozen=True)
class MacdValue:
    """One MACD reading."""

    macd: float
    signal: float
    histogram: float


class Macd:
    """MACD: fast EMA minus slow EMA, its signal EMA and the histogram."""

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self._fast = Ema(fast)
        self._slow = Ema(slow)
        self._signal = Ema(signal)
        self.line: Optional[float] = None
        self.value: Optional[MacdValue] = None

    def update(self, close: float) -> Optional[MacdValue]:
        # Both EMAs see every close, even before the other is warm.
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        if fast is None or slow is None:
            return None
        macd = fast - slow
        self.line = macd
        signal = self._signal.update(macd)
        self.value = None if signal is None else MacdValue(macd, signal, macd - signal)
        return self.value
