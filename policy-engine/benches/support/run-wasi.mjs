// Runs a wasm32-wasip1 program (the loading benchmark built for the module's target) in node's
// V8, as Envoy runs the module: `node policy-engine/benches/support/run-wasi.mjs FILE.wasm [ARGS]`.
// Node's WASI is enough here: the benchmark reads a clock and prints, nothing else.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv } from 'node:process';

const [file, ...args] = argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
const code = wasi.start(instance);
if (code !== 0) {
  process.exitCode = code;
}
