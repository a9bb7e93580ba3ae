// Write garden modules in JavaScript.
//
// A module is a class extending `Module`; the app file exports
// `module = exportModule(MyModule, host)` (with `import * as host from
// 'garden:pipeline/host@0.4.0'`), and `jco componentize` with the QuickJS
// backend builds the component (see README, "Write a module in
// JavaScript"). What the SDK hides:
//
// * the batch, the name table and cohort members of the WIT: the module
//   sees one message at a time, with topic and publisher as strings;
// * 64-bit fields: the WIT's `time` fields (s64) and `seq` (u64) arrive
//   as BigInt (StarlingMonkey) or Number (QuickJS); the module always sees
//   Numbers (event times in ms fit in one), and the `time` fields of what
//   it publishes go back in the form the engine gave;
// * errors: a thrown error (or string) fails that one message, or in the
//   constructor refuses the parameters.
//
// Nothing here imports the host, so module logic runs under `node --test`.

export * from './indicators.js';

/** Every instance of the module receives every message on `topic`. */
export const broadcast = (topic) => ({ topic, delivery: 'broadcast', addressed: false });
/** Each message on `topic` goes to one instance (by key). */
export const shared = (topic) => ({ topic, delivery: 'shared', addressed: false });
/** Only messages on `topic` whose key is this instance's id. */
export const addressed = (topic) => ({ topic, delivery: 'broadcast', addressed: true });

/** A real-valued gene within [min, max]; `scale` is its mutation step. */
export const floatGene = (name, min, max, dflt, scale) => ({ name, kind: 'float', min, max, default: dflt, scale });
/** An integer gene within [min, max]. */
export const intGene = (name, min, max, dflt, scale) => ({ name, kind: 'int', min, max, default: dflt, scale });
/** A gene that is on or off. */
export const booleanGene = (name, dflt) => ({ name, kind: 'boolean', min: 0, max: 1, default: dflt ? 1 : 0, scale: 0 });

/** A module's description, built step by step. */
export class Info {
  constructor(name, version, role) {
    this.wit = { name, version, role, subscribes: [], publishes: [], genes: [], cohort: 0 };
  }
  subscribe(subscription) { this.wit.subscribes.push(subscription); return this; }
  publishes(topic) { this.wit.publishes.push(topic); return this; }
  gene(gene) { this.wit.genes.push(gene); return this; }
  /** Let one instance carry up to `members` variants (docs/cohorts.md). */
  cohort(members) { this.wit.cohort = members; return this; }
}

/** Start a module's description. */
export const info = (name, version, role) => new Info(name, version, role);

/** What a variant learns when it starts. */
export class Context {
  constructor(ctx) {
    this.instance = ctx.instance;
    this.member = ctx.member;
    this.snapshot = ctx.snapshot;
    this.params = new Map(ctx.params.map((p) => [p.name, p.value]));
    this.settings = new Map(ctx.settings.map((s) => [s.name, s.value]));
  }
  #param(name) {
    const v = this.params.get(name);
    if (v === undefined) throw new Error(`missing parameter \`${name}\``);
    return v;
  }
  /** A gene's value as a Number (any kind). */
  float(name) {
    const v = this.#param(name);
    return v.tag === 'boolean' ? (v.val ? 1 : 0) : Number(v.val);
  }
  /** An integer gene's value. */
  int(name) {
    const v = this.#param(name);
    if (v.tag !== 'int') throw new Error(`parameter \`${name}\` is not an integer`);
    return Number(v.val);
  }
  /** A boolean gene's value. */
  boolean(name) {
    const v = this.#param(name);
    if (v.tag !== 'boolean') throw new Error(`parameter \`${name}\` is not a boolean`);
    return v.val;
  }
  /** A free-form setting from the pipeline file. */
  setting(name) { return this.settings.get(name); }
  /** A setting as a number, or `dflt` when absent. */
  settingFloat(name, dflt) {
    const text = this.settings.get(name);
    if (text === undefined) return dflt;
    const x = Number(text);
    if (Number.isNaN(x)) throw new Error(`setting \`${name}\` is not a number: ${text}`);
    return x;
  }
}

/** What one `onMessage` sends; delivered only if it returns normally. */
export class Outbox {
  constructor() { this.messages = []; }
  publish(topic, key, body) { this.messages.push({ topic, key, body }); }
  take() { const m = this.messages; this.messages = []; return m; }
}

/** What a module author extends. */
export class Module {
  /** Name, version, role, topics and genes (an `Info`). */
  static describe() { throw new Error('describe() is not written'); }
  /** Handle one message; throw to fail it (nothing in `out` is sent). */
  onMessage(msg, out) { throw new Error('onMessage() is not written'); }
  /** Learned state a child may start from (`ctx.snapshot`). None by default. */
  snapshot() { return undefined; }
}

// `time` (s64) is the only 64-bit field inside bodies.
function timesToNumbers(v) {
  if (Array.isArray(v)) return v.map(timesToNumbers);
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = k === 'time' && typeof x === 'bigint' ? Number(x) : timesToNumbers(x);
    return o;
  }
  return v;
}

function timesToBigInts(v) {
  if (Array.isArray(v)) return v.map(timesToBigInts);
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = k === 'time' && typeof x === 'number' ? BigInt(Math.trunc(x)) : timesToBigInts(x);
    return o;
  }
  return v;
}

const message = (e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

/**
 * The object jco exports as the `module` interface for `cls`. `host` is
 * `garden:pipeline/host@0.4.0` (its `log` and `now`), or undefined in tests.
 */
export function exportModule(cls, host) {
  const members = [];
  let names = [];
  // The engine's glue gives 64-bit fields as BigInt (StarlingMonkey) or as
  // Number (QuickJS) and takes them back the same way: what a module sends
  // follows what it was given.
  const handle = (module, msg, big) => {
    const out = new Outbox();
    try {
      module.onMessage(msg, out);
      const sent = out.take().map((o) => ({ topic: o.topic, key: o.key, body: big ? timesToBigInts(o.body) : o.body }));
      return { tag: 'ok', val: sent };
    } catch (e) {
      return { tag: 'err', val: message(e) };
    }
  };
  return {
    describe() {
      const d = cls.describe();
      return d instanceof Info ? d.wit : d;
    },
    init(ctx) {
      members[ctx.member] = undefined;
      try {
        members[ctx.member] = new cls(new Context(ctx));
      } catch (e) {
        throw message(e);
      }
    },
    onMessages(batch) {
      if (batch.names.length > 0 || names.length !== batch.namesFrom) {
        names = names.slice(0, batch.namesFrom).concat(batch.names);
      }
      const results = [];
      for (const m of batch.messages) {
        const big = typeof m.time === 'bigint';
        const msg = {
          topic: names[m.topic] ?? '',
          key: m.key,
          seq: Number(m.seq),
          time: Number(m.time),
          source: names[m.source] ?? '',
          // Only BigInt times need a converted copy; a body the glue gave
          // with Numbers (QuickJS) is passed as it is, at no cost.
          body: big ? timesToNumbers(m.body) : m.body,
        };
        if (m.member === undefined || m.member === null) {
          for (const module of members) if (module !== undefined) results.push(handle(module, msg, big));
        } else if (members[m.member] !== undefined) {
          results.push(handle(members[m.member], msg, big));
        } else {
          results.push({ tag: 'err', val: `no member ${m.member} was started` });
        }
      }
      return results;
    },
    save(member) {
      const module = members[member];
      return module === undefined ? undefined : module.snapshot();
    },
    leave(member) {
      members[member] = undefined;
    },
  };
}

/** Write to the host's log (`host` as given to `exportModule`); to stderr in tests. */
export function log(host, level, text) {
  if (host) host.log(level, text);
  else console.error(`[${level}] ${text}`);
}
