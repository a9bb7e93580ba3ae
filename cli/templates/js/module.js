// {{name}}: a garden module. It counts bars and, every `every` of them,
// sends the bar on `{{name}}-count`.
import { Module, broadcast, info, intGene } from './garden-sdk.js';

export class {{class}} extends Module {
  static describe() {
    return info('{{name}}', '0.1.0', 'example')
      .subscribe(broadcast('bar'))
      .publishes('{{name}}-count')
      .gene(intGene('every', 1, 1000, 100, 10));
  }

  constructor(ctx) {
    super();
    this.every = Math.max(ctx.int('every'), 1);
    this.seen = 0;
  }

  onMessage(msg, out) {
    if (msg.body.tag !== 'bar') return;
    this.seen += 1;
    if (this.seen % this.every === 0) out.publish('{{name}}-count', msg.body.val.symbol, msg.body);
  }
}
