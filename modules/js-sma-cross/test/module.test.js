// js-sma-cross's logic, natively: `node --test modules/js-sma-cross`.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Context, Outbox } from '../../../guest-sdk/js/garden-sdk.js';
import { SmaCross } from '../module.js';

function variant() {
  const params = SmaCross.describe().wit.genes.map((g) => ({
    name: g.name,
    value: g.kind === 'int' ? { tag: 'int', val: BigInt(g.default) } : { tag: 'float', val: g.default },
  }));
  params[0].value = { tag: 'int', val: 2n };
  params[1].value = { tag: 'int', val: 5n };
  return new SmaCross(new Context({ instance: 'j1', member: 0, params, settings: [], snapshot: undefined }));
}

test('a cross up then down writes a long then a short plan', () => {
  const m = variant();
  const closes = [...Array(20).fill(100), 101, 102, 103, 104, 105, 104, 103, 101, 99, 97, 95];
  const plans = [];
  closes.forEach((c, i) => {
    const out = new Outbox();
    const bar = { symbol: 'EURUSD', time: i * 3600000, open: c, high: c + 0.5, low: c - 0.5, close: c, volume: 1 };
    m.onMessage({ topic: 'bar', key: 'EURUSD', seq: i, time: i * 3600000, source: 'feed', body: { tag: 'bar', val: bar } }, out);
    plans.push(...out.messages.map((o) => o.body.val));
  });
  assert.deepEqual(plans.map((p) => p.side), ['long', 'short']);
  assert.ok(plans[0].stop < plans[0].entry && plans[0].entry < plans[0].target);
  assert.equal(plans[0].origin, 'j1');
});
