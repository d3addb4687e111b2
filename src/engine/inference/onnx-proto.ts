// Encode-only protobuf writer for the handful of ONNX messages the graph builder needs
// (weights never go inline but into an external data file, so the proto stays small and a
// dependency buys nothing). Field numbers are those of onnx.proto (proto2); repeated scalars are written
// unpacked, which every parser accepts.

export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9 } as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

class Writer {
  private readonly parts: Uint8Array[] = [];
  private size = 0;

  private push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.size += bytes.length;
  }

  private varint(value: number | bigint): void {
    // Negative int64 values take ten bytes (two's complement), as protobuf specifies.
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.push(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, 2);
    this.varint(value.length);
    this.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, value: Writer): this {
    return this.bytes(field, value.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let off = 0;
    for (const p of this.parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
}

export type AttrValue = number | string | number[] | { float: number } | { graph: SubgraphSpec };

/** A subgraph (an If branch): nodes that may read any value of the enclosing graph, and its outputs. */
export interface SubgraphSpec {
  name: string;
  nodes: NodeSpec[];
  outputs: ValueInfoSpec[];
}

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  name: string;
  domain?: string;
  attrs?: Record<string, AttrValue>;
}

export interface ValueInfoSpec {
  name: string;
  type: DataTypeCode;
  dims: (number | string)[];
}

export interface InitializerSpec {
  name: string;
  type: DataTypeCode;
  dims: number[];
  /** Inline bytes (small constants) ... */
  raw?: Uint8Array;
  /** ... or a byte range of the external data file. */
  external?: { location: string; offset: number; length: number };
}

export interface ModelSpec {
  nodes: NodeSpec[];
  inputs: ValueInfoSpec[];
  outputs: ValueInfoSpec[];
  initializers: InitializerSpec[];
  opsets: { domain: string; version: number }[];
}

// AttributeProto.AttributeType
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_GRAPH = 5;
const ATTR_INTS = 7;

function attribute(name: string, value: AttrValue): Writer {
  const w = new Writer().string(1, name);
  if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: use { float } for non-integers`);
    return w.int(3, value).int(20, ATTR_INT);
  }
  if (typeof value === "string") return w.string(4, value).int(20, ATTR_STRING);
  if (Array.isArray(value)) {
    for (const v of value) w.int(8, v);
    return w.int(20, ATTR_INTS);
  }
  if ("graph" in value) {
    const g = new Writer();
    for (const n of value.graph.nodes) g.message(1, node(n));
    g.string(2, value.graph.name);
    for (const o of value.graph.outputs) g.message(12, valueInfo(o));
    return w.message(6, g).int(20, ATTR_GRAPH);
  }
  return w.float(2, value.float).int(20, ATTR_FLOAT);
}

function node(spec: NodeSpec): Writer {
  const w = new Writer();
  for (const i of spec.inputs) w.string(1, i);
  for (const o of spec.outputs) w.string(2, o);
  w.string(3, spec.name).string(4, spec.op);
  for (const [k, v] of Object.entries(spec.attrs ?? {})) w.message(5, attribute(k, v));
  if (spec.domain) w.string(7, spec.domain);
  return w;
}

function valueInfo(spec: ValueInfoSpec): Writer {
  const shape = new Writer();
  for (const d of spec.dims) shape.message(1, typeof d === "number" ? new Writer().int(1, d) : new Writer().string(2, d));
  const tensorType = new Writer().int(1, spec.type).message(2, shape);
  return new Writer().string(1, spec.name).message(2, new Writer().message(1, tensorType));
}

function tensor(spec: InitializerSpec): Writer {
  const w = new Writer();
  for (const d of spec.dims) w.int(1, d);
  w.int(2, spec.type).string(8, spec.name);
  if (spec.raw) return w.bytes(9, spec.raw);
  if (!spec.external) throw new Error(`initializer ${spec.name} has no data`);
  const entry = (k: string, v: string) => new Writer().string(1, k).string(2, v);
  w.message(13, entry("location", spec.external.location));
  w.message(13, entry("offset", String(spec.external.offset)));
  w.message(13, entry("length", String(spec.external.length)));
  return w.int(14, 1); // data_location = EXTERNAL
}

export function encodeModel(spec: ModelSpec): Uint8Array {
  const graph = new Writer();
  for (const n of spec.nodes) graph.message(1, node(n));
  graph.string(2, "openft");
  for (const t of spec.initializers) graph.message(5, tensor(t));
  for (const i of spec.inputs) graph.message(11, valueInfo(i));
  for (const o of spec.outputs) graph.message(12, valueInfo(o));
  const model = new Writer().int(1, 10).string(2, "openft");
  for (const o of spec.opsets) model.message(8, new Writer().string(1, o.domain).int(2, o.version));
  return model.message(7, graph).finish();
}
