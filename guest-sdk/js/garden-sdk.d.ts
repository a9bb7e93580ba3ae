// Type declarations of the JavaScript SDK (garden-sdk.js), for editors and
// TypeScript authors. The records follow wit/garden.wit (garden:pipeline@0.4.0)
// as the SDK hands them to a module: 64-bit fields are Numbers.

export type Side = 'long' | 'short';
export type Verdict = 'approve' | 'modify' | 'reject';
export type FillKind = 'entry' | 'stop' | 'target' | 'horizon' | 'close' | 'cancel';
export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export type CuratorAction = 'pass' | 'veto' | 'nudge' | 'missing';
export type NudgeTarget = 'log-odds' | 'confidence' | 'size';

export interface Bar { symbol: string; time: number; open: number; high: number; low: number; close: number; volume: number }
export interface Plan {
  id: string; origin: string; symbol: string; side: Side; entry: number; stop: number; target: number;
  size: number; horizon: number; confidence: number; time: number;
}
export interface Evidence { planId: string; expert: string; llr: number; reason: string }
export interface ScoredPlan {
  plan: Plan; priorLogOdds: number; logOdds: number; confidence: number;
  experts: string[]; missing: string[]; confirmed: boolean; curation: Curation[];
}
export interface Decision {
  plan: Plan; verdict: Verdict; size: number; confidence: number; reason: string; curation: Curation[];
}
export interface Fill {
  planId: string; origin: string; symbol: string; side: Side; kind: FillKind;
  price: number; size: number; fee: number; time: number; curation: Curation[];
}
/** A curator's verdict about one plan (docs/curators.md). */
export interface Curation {
  planId: string; curator: string; action: CuratorAction; target: NudgeTarget; amount: number; reason: string;
}
/** What a module shares with the others on the `intel` topic. */
export interface Intel { subject: string; scope: string; values: Metric[]; samples: number }
export interface Feedback { planId: string; origin: string; pnl: number; exit: FillKind; barsHeld: number }
export interface Metric { name: string; value: number }
export interface Fitness { subject: string; values: number[]; trades: number; metrics: Metric[] }
export interface Tape { symbol: string; time: number; token: string; features: Metric[]; extra: Metric[] }
export interface ContextChange { label: string; detail: string }

/** The body of a message: `{ tag, val }` as the WIT variant. */
export type Body =
  | { tag: 'bar'; val: Bar }
  | { tag: 'plan'; val: Plan }
  | { tag: 'evidence'; val: Evidence }
  | { tag: 'scored'; val: ScoredPlan }
  | { tag: 'decision'; val: Decision }
  | { tag: 'fill'; val: Fill }
  | { tag: 'feedback'; val: Feedback }
  | { tag: 'fitness'; val: Fitness }
  | { tag: 'context'; val: ContextChange }
  | { tag: 'tape'; val: Tape }
  | { tag: 'curation'; val: Curation }
  | { tag: 'intel'; val: Intel }
  | { tag: 'end-of-stream' }
  | { tag: 'retired'; val: string }
  | { tag: 'custom'; val: Uint8Array };

/** A message as a module handles it. */
export interface Envelope { topic: string; key: string; seq: number; time: number; source: string; body: Body }

export interface Subscription { topic: string; delivery: 'shared' | 'broadcast'; addressed: boolean }
export interface Gene { name: string; kind: 'float' | 'int' | 'boolean'; min: number; max: number; default: number; scale: number }
export interface Snapshot { version: number; data: Uint8Array }

export function broadcast(topic: string): Subscription;
export function shared(topic: string): Subscription;
export function addressed(topic: string): Subscription;
export function floatGene(name: string, min: number, max: number, dflt: number, scale: number): Gene;
export function intGene(name: string, min: number, max: number, dflt: number, scale: number): Gene;
export function booleanGene(name: string, dflt: boolean): Gene;

/** A module's description, built step by step. */
export class Info {
  constructor(name: string, version: string, role: string);
  subscribe(subscription: Subscription): Info;
  publishes(topic: string): Info;
  gene(gene: Gene): Info;
  /** Let one instance carry up to `members` variants (docs/cohorts.md). */
  cohort(members: number): Info;
}
export function info(name: string, version: string, role: string): Info;

/** What a variant learns when it starts. */
export class Context {
  readonly instance: string;
  readonly member: number;
  readonly snapshot: Snapshot | undefined;
  float(name: string): number;
  int(name: string): number;
  boolean(name: string): boolean;
  setting(name: string): string | undefined;
  settingFloat(name: string, dflt: number): number;
}

/** What one `onMessage` sends; delivered only if it returns normally. */
export class Outbox {
  readonly messages: { topic: string; key: string; body: Body }[];
  publish(topic: string, key: string, body: Body): void;
}

/** What a module author extends; the constructor takes a `Context` and may throw to refuse it. */
export class Module {
  static describe(): Info;
  /** Handle one message; throw to fail it (nothing in `out` is sent). */
  onMessage(msg: Envelope, out: Outbox): void;
  snapshot(): Snapshot | undefined;
}

/** The object the component exports as its `module` interface. */
export function exportModule(cls: typeof Module, host?: { log(level: Level, text: string): void }): unknown;
/** Write to the host's log; to stderr without a host (tests). */
export function log(host: { log(level: Level, text: string): void } | undefined, level: Level, text: string): void;

export class Ema { constructor(period: number); update(x: number): number | undefined; readonly value: number | undefined }
export class Sma { constructor(period: number); update(x: number): number | undefined; readonly value: number | undefined }
export class Atr { constructor(period: number); update(high: number, low: number, close: number): number | undefined; readonly value: number | undefined }
export class Rsi { constructor(period: number); update(close: number): number | undefined; readonly value: number | undefined }
export interface MacdValue { macd: number; signal: number; histogram: number }
export class Macd { constructor(fast: number, slow: number, signal: number); update(close: number): MacdValue | undefined; readonly value: MacdValue | undefined }
