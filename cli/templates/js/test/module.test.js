// {{name}}'s logic under `node --test` (no Wasm).
import test from 'node:test';
import assert from 'node:assert/strict';
import { Context, Outbox } from '../garden-sdk.js';
import { {{class}} } from '../module.js';

test('sends every nth bar', () => {
  const m = new {{class}}(new Context({ instance: 't', member: 0, params: [{ name: 'every', value: { tag: 'int', val: 2n } }], settings: [], snapshot: undefined }));
  let sent = 0;
  for (let i = 0; i < 10; i++) {
    const out = new Outbox();
    const bar = { symbol: 'X', time: i, open: 1, high: 1, low: 1, close: 1, volume: 1 };
    m.onMessage({ topic: 'bar', key: 'X', seq: i, time: i, source: 'feed', body: { tag: 'bar', val: bar } }, out);
    sent += out.messages.length;
  }
  assert.equal(sent, 5);
});
