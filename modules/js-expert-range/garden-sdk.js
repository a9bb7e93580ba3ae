// The JavaScript SDK, seen from this module. A build copies
// guest-sdk/js/garden-sdk.js and indicators.js over this file (componentize
// only reads modules under the module's own directory); node --test
// follows this re-export.
export * from '../../guest-sdk/js/garden-sdk.js';
