// The component's entry: js-sma-cross exported as the garden module.
// Built with the QuickJS backend (see README, "Write a module in JavaScript").
import * as host from 'garden:pipeline/host@0.4.0';
import { exportModule } from './garden-sdk.js';
import { SmaCross } from './module.js';

export const module = exportModule(SmaCross, host);
