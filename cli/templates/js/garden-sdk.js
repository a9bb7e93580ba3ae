// The JavaScript SDK, seen from this module; build.sh copies the SDK's
// files over this re-export (componentize reads only this directory).
export * from '{{sdk}}/garden-sdk.js';
