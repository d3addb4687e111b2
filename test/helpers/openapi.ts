// Checks real responses against openapi.yaml: assertResponseMatches() validates a body against
// the schema the document gives for (method, path template, status) and throws when it does not
// match, or when the document does not describe that response at all.
import fs from "node:fs";
import path from "node:path";
import { projectRoot } from "../../src/project-root.js";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { parse } from "yaml";

// ajv-formats is CommonJS: under NodeNext its default import is the plugin itself at run time,
// while its types describe the module object.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as typeof addFormatsModule.default;

type Json = Record<string, unknown>;

export const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"] as const;

/** The repository root's openapi.yaml. */
export function findOpenApiFile(): string {
  return path.join(projectRoot(), "openapi.yaml");
}

let cachedDoc: Json | undefined;

/** The parsed document (cached). */
export function openApiDocument(): Json {
  if (cachedDoc === undefined) {
    const doc: unknown = parse(fs.readFileSync(findOpenApiFile(), "utf8"));
    if (!isObject(doc)) throw new Error("openapi.yaml is not a YAML mapping");
    cachedDoc = doc;
  }
  return cachedDoc;
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Resolves a local JSON pointer (`#/components/...`) in the document. */
export function resolvePointer(ref: string, doc: Json = openApiDocument()): unknown {
  if (!ref.startsWith("#/")) throw new Error(`only local $refs are supported: ${ref}`);
  let node: unknown = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
    if (!isObject(node) || !(key in node)) throw new Error(`unresolvable $ref ${ref}`);
    node = node[key];
  }
  return node;
}

/** Follows `$ref`s of OpenAPI objects (responses, parameters, headers) until a concrete object. */
function deref(node: unknown, doc: Json): Json {
  const seen = new Set<string>();
  let cur = node;
  while (isObject(cur) && typeof cur.$ref === "string") {
    if (seen.has(cur.$ref)) throw new Error(`$ref cycle at ${cur.$ref}`);
    seen.add(cur.$ref);
    cur = resolvePointer(cur.$ref, doc);
  }
  if (!isObject(cur)) throw new Error("expected an object");
  return cur;
}

// Component schemas become $defs of one schema registered with ajv, and every
// `#/components/schemas/X` becomes a reference into it, so recursion and sharing work.
const SCHEMAS_ID = "https://openft.invalid/openapi/components.json";

function rewriteRefs(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (!isObject(node)) return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "$ref" && typeof v === "string") {
      const m = /^#\/components\/schemas\/(.+)$/.exec(v);
      if (!m) throw new Error(`a schema may only $ref #/components/schemas/*: ${v}`);
      out[k] = `${SCHEMAS_ID}#/$defs/${m[1]}`;
    } else {
      out[k] = rewriteRefs(v);
    }
  }
  return out;
}

let cachedAjv: Ajv2020 | undefined;

function ajv(): Ajv2020 {
  if (cachedAjv === undefined) {
    const instance = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
    addFormats(instance);
    // OpenAPI's annotation keywords in schema objects.
    for (const keyword of ["example", "discriminator", "xml", "externalDocs"]) instance.addKeyword(keyword);
    const components = openApiDocument().components;
    const schemas = isObject(components) && isObject(components.schemas) ? components.schemas : {};
    instance.addSchema({ $id: SCHEMAS_ID, $defs: rewriteRefs(schemas) });
    cachedAjv = instance;
  }
  return cachedAjv;
}

export interface Operation {
  readonly method: string;
  readonly path: string;
  readonly operation: Json;
}

function operations(): Operation[] {
  const paths = openApiDocument().paths;
  if (!isObject(paths)) throw new Error("openapi.yaml has no paths");
  const out: Operation[] = [];
  for (const [p, item] of Object.entries(paths)) {
    if (!isObject(item)) continue;
    for (const method of HTTP_METHODS) {
      const operation = item[method];
      if (isObject(operation)) out.push({ method, path: p, operation });
    }
  }
  return out;
}

/** Every (method, path template) the document describes, methods in lower case. */
export function documentedOperations(): Array<{ method: string; path: string }> {
  return operations().map(({ method, path: p }) => ({ method, path: p }));
}

/** The documented operation, or a throw naming what is documented. */
export function findOperation(method: string, pathTemplate: string): Operation {
  const m = method.toLowerCase();
  const found = operations().find((op) => op.method === m && op.path === pathTemplate);
  if (!found) {
    const known = documentedOperations().map((op) => `${op.method.toUpperCase()} ${op.path}`).join(", ");
    throw new Error(`openapi.yaml documents no ${m.toUpperCase()} ${pathTemplate} (it documents: ${known})`);
  }
  return found;
}

/** The response object for `status` (falling back to `default`), $refs followed. */
export function findResponse(method: string, pathTemplate: string, status: number): Json {
  const { operation } = findOperation(method, pathTemplate);
  const responses = operation.responses;
  if (!isObject(responses)) throw new Error(`${method.toUpperCase()} ${pathTemplate} has no responses`);
  const response = responses[String(status)] ?? responses[`${String(status)[0]}XX`] ?? responses.default;
  if (response === undefined) {
    throw new Error(
      `openapi.yaml documents no ${status} response for ${method.toUpperCase()} ${pathTemplate} (it documents: ${Object.keys(responses).join(", ")})`,
    );
  }
  return deref(response, openApiDocument());
}

const validators = new Map<string, ValidateFunction>();

/** One line per ajv error, naming extra properties. */
function describeErrors(validate: ValidateFunction, root: string): string {
  return (validate.errors ?? [])
    .map((e) => `  ${e.instancePath || root} ${e.message ?? e.keyword}${e.keyword === "additionalProperties" ? `: ${JSON.stringify(e.params)}` : ""}`)
    .join("\n");
}

function isJsonMediaType(type: string): boolean {
  const base = type.split(";")[0]!.trim().toLowerCase();
  return base === "application/json" || base.endsWith("+json");
}

/**
 * Throws unless `body` is what openapi.yaml documents for this method, path template and status.
 * JSON bodies are validated against the schema; a non-JSON (binary) response only needs a string
 * or bytes body; a response documented without content needs an empty body.
 */
export function assertResponseMatches(method: string, pathTemplate: string, status: number, body: unknown): void {
  const where = `${method.toUpperCase()} ${pathTemplate} ${status}`;
  const response = findResponse(method, pathTemplate, status);
  const content = isObject(response.content) ? response.content : undefined;
  if (content === undefined || Object.keys(content).length === 0) {
    if (body === undefined || body === null || body === "") return;
    throw new Error(`${where}: openapi.yaml documents no body, but one was given`);
  }
  const jsonType = Object.keys(content).find(isJsonMediaType);
  if (jsonType === undefined) {
    if (typeof body === "string" || body instanceof Uint8Array || body instanceof ArrayBuffer) return;
    throw new Error(`${where}: documented as ${Object.keys(content).join(", ")}, expected a string or bytes body`);
  }
  const key = `${method.toLowerCase()} ${pathTemplate} ${status}`;
  let validate = validators.get(key);
  if (validate === undefined) {
    const media = content[jsonType];
    const schema = isObject(media) ? media.schema : undefined;
    if (!isObject(schema)) throw new Error(`${where}: the ${jsonType} response has no schema`);
    validate = ajv().compile(rewriteRefs(schema) as Json);
    validators.set(key, validate);
  }
  if (!validate(body)) {
    throw new Error(`${where}: the body does not match openapi.yaml:\n${describeErrors(validate, "(body)")}\nbody: ${JSON.stringify(body)}`);
  }
}

const schemaValidators = new Map<string, ValidateFunction>();

function componentValidator(name: string): ValidateFunction {
  let validate = schemaValidators.get(name);
  if (validate === undefined) {
    resolvePointer(`#/components/schemas/${name}`); // throws when the document has no such schema
    validate = ajv().compile({ $ref: `${SCHEMAS_ID}#/$defs/${name}` });
    schemaValidators.set(name, validate);
  }
  return validate;
}

/** Whether `value` matches the component schema `#/components/schemas/<name>`. */
export function matchesSchema(name: string, value: unknown): boolean {
  return componentValidator(name)(value);
}

/** Throws, listing the problems, unless `value` matches `#/components/schemas/<name>`. */
export function assertSchemaMatches(name: string, value: unknown): void {
  const validate = componentValidator(name);
  if (!validate(value)) {
    throw new Error(`${name}: the value does not match openapi.yaml:\n${describeErrors(validate, "(value)")}\nvalue: ${JSON.stringify(value)}`);
  }
}
