// js-expert-range, a micro-expert in JavaScript: is a plan's target within
// reach of the recent volatility over its horizon?
//
// For each plan it compares the distance to the target with what the
// market usually moves in that many bars (ATR × √horizon). A target well
// inside that reach supports the plan; one far outside opposes it. The
// evidence is a log-likelihood ratio in [-weight, +weight].

import { Atr, Module, broadcast, floatGene, info, intGene, shared } from './garden-sdk.js';

export class RangeExpert extends Module {
  static describe() {
    return info('js-expert-range', '0.1.0', 'expert')
      .subscribe(broadcast('bar'))
      .subscribe(shared('plan'))
      .publishes('evidence')
      .gene(intGene('atr-period', 5, 100, 20, 5))
      .gene(floatGene('weight', 0.05, 1, 0.3, 0.05));
  }

  constructor(ctx) {
    super();
    this.atr = new Atr(ctx.int('atr-period'));
    this.weight = ctx.float('weight');
    this.name = 'js-expert-range';
  }

  onMessage(msg, out) {
    const body = msg.body;
    if (body.tag === 'bar') {
      this.atr.update(body.val.high, body.val.low, body.val.close);
      return;
    }
    if (body.tag !== 'plan') return;
    const plan = body.val;
    const atr = this.atr.value;
    let llr = 0;
    let reason = 'no volatility estimate yet';
    if (atr !== undefined && atr > 0) {
      const reach = atr * Math.sqrt(Math.max(plan.horizon, 1));
      const r = Math.abs(plan.target - plan.entry) / reach;
      llr = r < 1 ? this.weight * (1 - r) : -this.weight * Math.min(r - 1, 1);
      reason = `target ${r.toFixed(2)} of the usual ${plan.horizon}-bar reach`;
    }
    out.publish('evidence', plan.id, {
      tag: 'evidence',
      val: { planId: plan.id, expert: this.name, llr, reason },
    });
  }
}
