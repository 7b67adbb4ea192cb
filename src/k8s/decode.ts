/**
 * Small typed decoders for the few API object shapes kube-proxy reads (./objects.ts).
 *
 * Written here rather than with zod on purpose: importing zod costs a CLI start 80–100 ms
 * (99 module files) before anything is decoded, which was most of `render`'s start-up over bare
 * Node.js, and every Service and EndpointSlice of a 10,000-Service cluster goes through these.
 * The semantics are the ones the zod schemas had: unknown fields are ignored (real objects carry
 * many), a field that is absent or JSON null counts as unset, the first problem found is
 * reported with the path to it.
 */

/** Thrown by a decoder; containers prepend their key while it unwinds. */
export class DecodeFailure extends Error {
  readonly path: PropertyKey[] = [];

  constructor(readonly reason: string) {
    super(reason);
  }
}

export type Decoder<T> = (value: unknown) => T;

export function fail(reason: string): never {
  throw new DecodeFailure(reason);
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export const string: Decoder<string> = (v) =>
  typeof v === "string" ? v : fail(`must be a string, not ${typeName(v)}`);

export const boolean: Decoder<boolean> = (v) =>
  typeof v === "boolean" ? v : fail(`must be true or false, not ${typeName(v)}`);

export const number: Decoder<number> = (v) =>
  typeof v === "number" && Number.isFinite(v) ? v : fail(`must be a number, not ${typeName(v)}`);

/** An integer in [min, max]; `message` says so in the field's own terms. */
export function integer(
  min: number,
  max: number,
  message = `must be an integer from ${min} to ${max}`,
): Decoder<number> {
  return (v) => (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max ? v : fail(message));
}

export function oneOf<const T extends readonly string[]>(values: T): Decoder<T[number]> {
  const allowed = new Set<string>(values);
  const message = `must be one of ${values.map((s) => JSON.stringify(s)).join(", ")}`;
  return (v) => (typeof v === "string" && allowed.has(v) ? (v as T[number]) : fail(message));
}

/** A string no longer than `max` that matches `pattern`. */
export function matching(max: number, pattern: RegExp, message: string): Decoder<string> {
  return (v) => {
    const s = string(v);
    if (s.length > max) fail(`must be no more than ${max} characters`);
    return pattern.test(s) ? s : fail(message);
  };
}

export function refine<T>(decoder: Decoder<T>, ok: (value: T) => boolean, message: string): Decoder<T> {
  return (v) => {
    const out = decoder(v);
    return ok(out) ? out : fail(message);
  };
}

/** Absent and JSON null both mean unset (Go treats them alike). */
export function optional<T>(decoder: Decoder<T>): Decoder<T | undefined> {
  return (v) => (v === undefined || v === null ? undefined : decoder(v));
}

function at<T>(key: PropertyKey, decode: () => T): T {
  try {
    return decode();
  } catch (err) {
    if (err instanceof DecodeFailure) err.path.unshift(key);
    throw err;
  }
}

export function array<T>(
  item: Decoder<T>,
  maxItems = Infinity,
  tooMany = `must have no more than ${maxItems} items`,
): Decoder<T[]> {
  return (v) => {
    if (!Array.isArray(v)) fail(`must be a list, not ${typeName(v)}`);
    if (v.length > maxItems) fail(tooMany);
    const out: T[] = new Array<T>(v.length);
    for (let i = 0; i < v.length; i++) {
      const element: unknown = v[i];
      out[i] = at(i, () => item(element));
    }
    return out;
  };
}

export const stringMap: Decoder<Record<string, string>> = (v) => {
  if (!isRecord(v)) fail(`must be a map of strings, not ${typeName(v)}`);
  for (const [key, value] of Object.entries(v)) at(key, () => string(value));
  return v as Record<string, string>;
};

type Shape = Record<string, Decoder<unknown>>;
export type Decoded<S extends Shape> = { [K in keyof S]: ReturnType<S[K]> };

/** The fields of `shape`, decoded in order; other fields are dropped. */
export function object<S extends Shape>(shape: S): Decoder<Decoded<S>> {
  const keys = Object.keys(shape);
  return (v) => {
    if (!isRecord(v)) fail(`must be an object, not ${typeName(v)}`);
    const out: Record<string, unknown> = {};
    for (const key of keys) {
      const decode = shape[key]!;
      const field = v[key];
      out[key] = at(key, () => decode(field));
    }
    return out as Decoded<S>;
  };
}

/** `decoder`, then `check`, which may fail at a path inside the value (`failAt`). */
export function checked<T>(decoder: Decoder<T>, check: (value: T) => void): Decoder<T> {
  return (v) => {
    const out = decoder(v);
    check(out);
    return out;
  };
}

export function failAt(path: readonly PropertyKey[], reason: string): never {
  const failure = new DecodeFailure(reason);
  failure.path.push(...path);
  throw failure;
}
