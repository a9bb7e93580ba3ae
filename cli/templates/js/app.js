// The component's entry.
import * as host from 'garden:pipeline/host@0.4.0';
import { exportModule } from './garden-sdk.js';
import { {{class}} } from './module.js';

export const module = exportModule({{class}}, host);
