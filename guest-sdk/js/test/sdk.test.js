// The JavaScript SDK without Wasm: `node --test guest-sdk/js`.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Ema, Macd, Module, Sma, broadcast, exportModule, info, intGene } from '../garden-sdk.js';

test('indicators warm up, then give values', () => {
  const e = new Ema(3);
  assert.equal(e.update(1), undefined);
  e.update(2);
  assert.equal(e.update(3), 2);
  const s = new Sma(2);
  s.update(1);
  assert.equal(s.update(3), 2);
  const m = new Macd(2, 3, 2);
  [1, 2, 3, 4, 5].forEach((x) => m.update(x));
  assert.ok(m.value && Math.abs(m.value.histogram - (m.value.macd - m.value.signal)) < 1e-12);
  assert.throws(() => new Ema(0));
});

class Counter extends Module {
  static describe() {
    return info('counter', '0.1.0', 'test').subscribe(broadcast('bar')).publishes('count').gene(intGene('every', 1, 10, 2, 1)).cohort(8);
  }
  constructor(ctx) {
    super();
    this.every = ctx.int('every');
    if (this.every < 1) throw new Error('every must be positive');
    this.seen = 0;
  }
  onMessage(msg, out) {
    if (msg.body.val.close < 0) throw new Error('negative close');
    this.seen += 1;
    if (this.seen % this.every === 0) out.publish('count', msg.source, msg.body);
  }
}

const ctx = (member, every) => ({ instance: `c${member}`, member, params: [{ name: 'every', value: { tag: 'int', val: BigInt(every) } }], settings: [], snapshot: undefined });
const bar = (close) => ({ tag: 'bar', val: { symbol: 'X', time: 5n, open: close, high: close, low: close, close, volume: 1 } });
const env = (member, close) => ({ topic: 0, key: 'k', seq: 1n, time: 5n, source: 1, member, body: bar(close) });

test('the export keeps members, the name table and BigInt times straight', () => {
  const m = exportModule(Counter);
  assert.equal(m.describe().cohort, 8);
  m.init(ctx(0, 1));
  m.init(ctx(2, 2));
  const first = m.onMessages({ namesFrom: 0, names: ['bar', 'feed'], messages: [env(undefined, 5)] });
  assert.deepEqual(first.map((r) => r.tag), ['ok', 'ok']);
  assert.equal(first[0].val.length, 1);
  assert.equal(first[0].val[0].key, 'feed');
  assert.equal(typeof first[0].val[0].body.val.time, 'bigint');
  assert.equal(first[1].val.length, 0);
  const second = m.onMessages({ namesFrom: 2, names: [], messages: [env(2, 5), env(0, -1)] });
  assert.equal(second[0].tag, 'ok');
  assert.equal(second[0].val.length, 1);
  assert.equal(second[1].tag, 'err');
  assert.match(second[1].val, /negative close/);
  m.leave(2);
  assert.equal(m.onMessages({ namesFrom: 2, names: [], messages: [env(undefined, 5)] }).length, 1);
  assert.throws(() => m.init(ctx(1, 0)), /every must be positive/);
});
