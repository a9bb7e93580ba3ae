// js-expert-range's logic, natively: `node --test modules/js-expert-range`.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Context, Outbox } from '../garden-sdk.js';
import { RangeExpert } from '../module.js';

const expert = () =>
  new RangeExpert(
    new Context({
      instance: 'e',
      member: 0,
      params: [
        { name: 'atr-period', value: { tag: 'int', val: 5n } },
        { name: 'weight', value: { tag: 'float', val: 0.3 } },
      ],
      settings: [],
      snapshot: undefined,
    }),
  );

const send = (e, body) => {
  const out = new Outbox();
  e.onMessage({ topic: '', key: '', seq: 0, time: 0, source: 'x', body }, out);
  return out.messages.map((m) => m.body.val);
};

test('a near target is supported, a far one opposed', () => {
  const e = expert();
  for (let i = 0; i < 10; i++) {
    send(e, { tag: 'bar', val: { symbol: 'X', time: i, open: 100, high: 101, low: 99, close: 100, volume: 1 } });
  }
  const plan = (target) => ({ tag: 'plan', val: { id: `p${target}`, origin: 'a', symbol: 'X', side: 'long', entry: 100, stop: 98, target, size: 1, horizon: 4, confidence: 0.5, time: 10 } });
  const [near] = send(e, plan(101));
  const [far] = send(e, plan(112));
  assert.equal(near.planId, 'p101');
  assert.equal(near.expert, 'js-expert-range');
  assert.ok(near.llr > 0, `near: ${near.llr}`);
  assert.ok(far.llr < 0 && far.llr >= -0.3, `far: ${far.llr}`);
});
