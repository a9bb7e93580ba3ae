// An SMA crossover alpha in JavaScript: a plan when the fast simple moving
// average crosses the slow one, with stop and target in ATRs. Written with
// the JavaScript SDK (guest-sdk/js); app.js exports it.

import { Atr, Module, Sma, broadcast, info, intGene, floatGene } from './garden-sdk.js';

export class SmaCross extends Module {
  static describe() {
    return info('js-sma-cross', '0.1.0', 'alpha')
      .subscribe(broadcast('bar'))
      .publishes('plan')
      .gene(intGene('fast', 2, 50, 10, 3))
      .gene(intGene('slow', 5, 200, 30, 10))
      .gene(floatGene('stop-atr', 0.5, 5, 2, 0.3))
      .gene(floatGene('target-atr', 0.5, 10, 3, 0.5))
      .gene(intGene('horizon', 1, 200, 24, 6))
      .gene(floatGene('size', 1, 100000, 10000, 1000))
      .cohort(256);
  }

  constructor(ctx) {
    super();
    this.instance = ctx.instance;
    this.fast = new Sma(ctx.int('fast'));
    this.slow = new Sma(ctx.int('slow'));
    this.atr = new Atr(14);
    this.stopAtr = ctx.float('stop-atr');
    this.targetAtr = ctx.float('target-atr');
    this.horizon = ctx.int('horizon');
    this.size = ctx.float('size');
    this.above = undefined;
    this.nextId = 0;
  }

  onMessage(msg, out) {
    if (msg.body.tag !== 'bar') return;
    const bar = msg.body.val;
    const fast = this.fast.update(bar.close);
    const slow = this.slow.update(bar.close);
    const atr = this.atr.update(bar.high, bar.low, bar.close);
    if (fast === undefined || slow === undefined || atr === undefined) return;
    const above = fast > slow;
    const crossed = this.above !== undefined && this.above !== above;
    this.above = above;
    if (!crossed || atr <= 0) return;
    const s = above ? 1 : -1;
    this.nextId += 1;
    const plan = {
      id: `${this.instance}-${this.nextId}`,
      origin: this.instance,
      symbol: bar.symbol,
      side: above ? 'long' : 'short',
      entry: bar.close,
      stop: bar.close - s * this.stopAtr * atr,
      target: bar.close + s * this.targetAtr * atr,
      size: this.size,
      horizon: this.horizon,
      confidence: 0.5,
      time: bar.time,
    };
    out.publish('plan', plan.id, { tag: 'plan', val: plan });
  }
}
