// The component's entry: js-expert-range exported as the garden module.
import * as host from 'garden:pipeline/host@0.4.0';
import { exportModule } from './garden-sdk.js';
import { RangeExpert } from './module.js';

export const module = exportModule(RangeExpert, host);
