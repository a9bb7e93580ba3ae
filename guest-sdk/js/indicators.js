// Streaming indicators, the same as the Rust SDK's (guest-sdk/src/indicators.rs),
// operation for operation, so results agree to rounding. Each gives
// `undefined` until its window is full.

/** Exponential moving average seeded with the mean of the first `period` values. */
export class Ema {
  constructor(period) {
    if (!(period >= 1)) throw new RangeError('Ema period must be at least 1');
    this.period = period;
    this.alpha = 2 / (period + 1);
    this.seen = 0;
    this.seedSum = 0;
    this.value = undefined;
  }
  update(x) {
    if (this.value !== undefined) {
      this.value = this.value + this.alpha * (x - this.value);
    } else {
      this.seedSum += x;
      this.seen += 1;
      if (this.seen === this.period) this.value = this.seedSum / this.period;
    }
    return this.value;
  }
}

/** Simple moving average over the last `period` values. */
export class Sma {
  constructor(period) {
    if (!(period >= 1)) throw new RangeError('Sma period must be at least 1');
    this.period = period;
    this.buf = [];
    this.next = 0;
    this.sum = 0;
  }
  update(x) {
    if (this.buf.length < this.period) {
      this.buf.push(x);
      this.sum += x;
    } else {
      const old = this.buf[this.next];
      this.buf[this.next] = x;
      this.sum += x - old;
    }
    this.next = (this.next + 1) % this.period;
    if (this.next === 0) {
      // Re-summed once per lap, as in Rust, so rounding error stays bounded.
      let total = 0;
      for (const v of this.buf) total += v;
      this.sum = total;
    }
    return this.value;
  }
  get value() {
    return this.buf.length === this.period ? this.sum / this.period : undefined;
  }
}

/** Average true range with Wilder's smoothing; a gap from the previous close counts. */
export class Atr {
  constructor(period) {
    if (!(period >= 1)) throw new RangeError('Atr period must be at least 1');
    this.period = period;
    this.prevClose = undefined;
    this.seen = 0;
    this.seedSum = 0;
    this.value = undefined;
  }
  update(high, low, close) {
    const range = high - low;
    const pc = this.prevClose;
    const tr = pc === undefined ? range : Math.max(Math.max(range, Math.abs(high - pc)), Math.abs(low - pc));
    this.prevClose = close;
    const n = this.period;
    if (this.value !== undefined) {
      this.value = (this.value * (n - 1) + tr) / n;
    } else {
      this.seedSum += tr;
      this.seen += 1;
      if (this.seen === this.period) this.value = this.seedSum / n;
    }
    return this.value;
  }
}

/** Relative strength index with Wilder's smoothing. */
export class Rsi {
  constructor(period) {
    if (!(period >= 1)) throw new RangeError('Rsi period must be at least 1');
    this.period = period;
    this.prevClose = undefined;
    this.changes = 0;
    this.avgGain = 0;
    this.avgLoss = 0;
    this.value = undefined;
  }
  update(close) {
    const prev = this.prevClose;
    this.prevClose = close;
    if (prev === undefined) return undefined;
    const change = close - prev;
    const gain = Math.max(change, 0);
    const loss = Math.max(-change, 0);
    const n = this.period;
    if (this.value !== undefined) {
      this.avgGain = (this.avgGain * (n - 1) + gain) / n;
      this.avgLoss = (this.avgLoss * (n - 1) + loss) / n;
    } else {
      this.avgGain += gain;
      this.avgLoss += loss;
      this.changes += 1;
      if (this.changes < this.period) return undefined;
      this.avgGain /= n;
      this.avgLoss /= n;
    }
    this.value = this.avgLoss === 0 ? 100 : 100 - 100 / (1 + this.avgGain / this.avgLoss);
    return this.value;
  }
}

/** MACD: fast EMA minus slow EMA, its signal EMA and the histogram. */
export class Macd {
  constructor(fast, slow, signal) {
    this.fast = new Ema(fast);
    this.slow = new Ema(slow);
    this.signal = new Ema(signal);
    this.line = undefined;
    this.value = undefined;
  }
  update(close) {
    // Both EMAs see every close, even before the other is warm.
    const fast = this.fast.update(close);
    const slow = this.slow.update(close);
    if (fast === undefined || slow === undefined) return undefined;
    const macd = fast - slow;
    this.line = macd;
    const signal = this.signal.update(macd);
    this.value = signal === undefined ? undefined : { macd, signal, histogram: macd - signal };
    return this.value;
  }
}
