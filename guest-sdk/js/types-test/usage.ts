// Compiled (not run) by the tests: the declarations describe the SDK as a
// TypeScript module author uses it.
import { Atr, Context, Curation, Envelope, Module, Outbox, broadcast, info, intGene } from '../garden-sdk.js';

export class Example extends Module {
  private atr: Atr;
  constructor(ctx: Context) {
    super();
    this.atr = new Atr(ctx.int('period'));
  }
  static describe() {
    return info('example', '0.1.0', 'expert').subscribe(broadcast('bar')).gene(intGene('period', 2, 50, 14, 2));
  }
  onMessage(msg: Envelope, out: Outbox): void {
    if (msg.body.tag === 'scored') {
      const veto: Curation = {
        planId: msg.body.val.plan.id, curator: 'example', action: 'veto', target: 'size', amount: 0, reason: 'example',
      };
      out.publish('curation', msg.key, { tag: 'curation', val: veto });
    }
    if (msg.body.tag === 'bar') {
      const v: number | undefined = this.atr.update(msg.body.val.high, msg.body.val.low, msg.body.val.close);
      if (v !== undefined) out.publish('x', msg.key, msg.body);
    }
  }
}
