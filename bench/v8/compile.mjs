// Compiles a Wasm module the way Envoy's V8 does (run under `node --no-liftoff
// --no-wasm-lazy-compilation --single-threaded`: TurboFan, every function, before the first call),
// so that `make bench-compile` can count the instructions of that compilation under callgrind.
// Without an argument it compiles an empty module: node's own start-up, subtracted as the baseline.
import { readFileSync } from 'node:fs';

const path = process.argv[2];
const bytes = path ? readFileSync(path) : new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
new WebAssembly.Module(bytes);
