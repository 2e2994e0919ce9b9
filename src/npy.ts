// NumPy .npy files (format 1.0, little-endian float32 / int32, C order): what `analyze --npy`
// writes, loadable with numpy.load; and a reader for checking them back.
import { readFileSync, writeFileSync } from "node:fs";
import { LljError } from "./errors.js";

export function writeNpy(path: string, data: Float32Array | Int32Array, shape: number[]): void {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new LljError(`npy: shape [${shape.join(", ")}] does not match ${data.length} values`);
  const descr = data instanceof Int32Array ? "<i4" : "<f4";
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(", ");
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  // magic (6) + version (2) + header length (2) + header, padded with spaces to 64 bytes, ending in \n
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, " ") + "\n";
  const head = Buffer.alloc(10);
  head.write("\x93NUMPY", 0, "latin1");
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  writeFileSync(path, Buffer.concat([head, Buffer.from(header, "latin1"), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

export function readNpy(path: string): { data: Float32Array | Int32Array; shape: number[] } {
  const buf = readFileSync(path);
  if (buf.toString("latin1", 0, 6) !== "\x93NUMPY") throw new LljError(`${path} is not a .npy file`);
  const headerLength = buf[6] === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = buf[6] === 1 ? 10 : 12;
  const header = buf.toString("latin1", start, start + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (/'fortran_order':\s*True/.test(header)) throw new LljError("npy: Fortran order is not supported");
  const body = buf.subarray(start + headerLength);
  const bytes = new Uint8Array(body).slice().buffer;
  if (descr === "<f4") return { data: new Float32Array(bytes), shape };
  if (descr === "<i4") return { data: new Int32Array(bytes), shape };
  throw new LljError(`npy: unsupported dtype ${descr}`);
}
