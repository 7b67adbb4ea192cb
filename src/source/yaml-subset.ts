/**
 * A fast parser for the block YAML that `yaml.stringify` and `kubectl get -o yaml` write: block
 * mappings and sequences, one-line plain and quoted scalars, comments and `---` separators. It
 * returns null for anything else (flow collections, multi-line and block scalars, anchors,
 * aliases, tags, complex keys, directives, tabs, duplicate keys …), and the caller then uses the
 * full `yaml` parser, which also reports the errors. Whenever it returns documents, they equal
 * what `parseAllDocuments(text)` + `toJS()` gives with the default options (YAML 1.2, core
 * schema, unique keys), with the line of each document's first content token.
 */

export interface SubsetDocument {
  readonly value: unknown;
  /** 1-based line of the document's first content token. */
  readonly line: number;
}

/** Thrown inside the parser when the text leaves the subset; caught by parseYamlSubset. */
class OutsideSubset extends Error {}

const SPACE = 0x20;
const HASH = 0x23;
const DASH = 0x2d;
const COLON = 0x3a;
const SQUOTE = 0x27;
const DQUOTE = 0x22;

/**
 * Characters the subset refuses anywhere: tabs, control characters other than \n (and \r of
 * \r\n, removed first), DEL and C1 controls, the BOM, U+2028/U+2029 and U+FFFE/U+FFFF.
 */
// eslint-disable-next-line no-control-regex -- control characters are exactly what it finds
const REFUSED_CHARS = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]/;

/** A plain value may not start with one of these (an indicator); `-`, `?`, `:` are checked apart. */
const INDICATOR_START = new Set([..."[]{},#&*!|>%@`"].map((c) => c.charCodeAt(0)));

/** Plain keys: `[A-Za-z_][A-Za-z0-9_./-]*` (identifiers and label keys), by character code. */
function isKeyHead(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
}
function isKeyChar(c: number): boolean {
  return isKeyHead(c) || (c >= 0x2d && c <= 0x39); // - . / 0-9
}
const NON_STRING_KEYS = new Set(["null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE"]);
/**
 * Deepest nesting the subset takes; deeper texts go to yaml. yaml composes one stack frame chain
 * per level and reports RESOURCE_EXHAUSTION when the stack runs out, somewhere between ~900 and
 * ~1,200 levels depending on the stack already in use, so only yaml can say whether it accepts a
 * deep text. Kubernetes objects nest about 10 levels.
 */
export const MAX_SUBSET_DEPTH = 64;
/** yaml refuses implicit keys longer than 1024 characters; stay well inside. */
const MAX_KEY_LENGTH = 1000;

// The core schema's plain-scalar tags (node_modules/yaml/dist/schema/core, common/null.js), in
// the order yaml tries them.
const NULL_RE = /^(?:~|[Nn]ull|NULL)?$/;
const BOOL_RE = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/;
const INT_OCT_RE = /^0o[0-7]+$/;
const INT_RE = /^[-+]?[0-9]+$/;
const INT_HEX_RE = /^0x[0-9a-fA-F]+$/;
const FLOAT_NAN_RE = /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/;
const FLOAT_EXP_RE = /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/;
const FLOAT_RE = /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/;
/** First characters of every plain scalar that resolves to something other than a string. */
const NON_STRING_HEAD = new Set([..."~nNtTfF0123456789+-."].map((c) => c.charCodeAt(0)));

/** A plain scalar's value as the core schema resolves it. */
function resolvePlain(s: string): unknown {
  if (!NON_STRING_HEAD.has(s.charCodeAt(0))) return s;
  if (NULL_RE.test(s)) return null;
  if (BOOL_RE.test(s)) return s[0] === "t" || s[0] === "T";
  if (INT_OCT_RE.test(s)) return parseInt(s.substring(2), 8);
  if (INT_RE.test(s)) return parseInt(s, 10);
  if (INT_HEX_RE.test(s)) return parseInt(s.substring(2), 16);
  if (FLOAT_NAN_RE.test(s)) {
    if (s.slice(-3).toLowerCase() === "nan") return NaN;
    return s[0] === "-" ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY;
  }
  if (FLOAT_EXP_RE.test(s) || FLOAT_RE.test(s)) return parseFloat(s);
  return s;
}

const ESCAPES: Readonly<Record<string, string>> = {
  "\\": "\\",
  '"': '"',
  "/": "/",
  n: "\n",
  t: "\t",
  r: "\r",
  b: "\b",
  f: "\f",
  "0": "\0",
};
const HEX4 = /^[0-9a-fA-F]{4}$/;

/** A quoted scalar on one line: its value and the index just after the closing quote. */
interface Quoted {
  readonly value: string;
  readonly end: number;
}

// The scanners below read the whole text `t`; `end` is the offset of the current line's end.

function singleQuoted(t: string, at: number, end: number): Quoted {
  let value = "";
  let from = at + 1;
  for (let i = from; i < end; i++) {
    if (t.charCodeAt(i) !== SQUOTE) continue;
    value += t.slice(from, i);
    if (t.charCodeAt(i + 1) !== SQUOTE) return { value, end: i + 1 };
    value += "'";
    from = ++i + 1;
  }
  throw new OutsideSubset(); // continues on the next line
}

function doubleQuoted(t: string, at: number, end: number): Quoted {
  let value = "";
  let from = at + 1;
  for (let i = from; i < end; i++) {
    const c = t.charCodeAt(i);
    if (c === DQUOTE) return { value: value + t.slice(from, i), end: i + 1 };
    if (c !== 0x5c) continue;
    value += t.slice(from, i);
    const e = i + 1 < end ? t[i + 1] : undefined;
    if (e === "u") {
      const hex = t.slice(i + 2, Math.min(i + 6, end));
      if (!HEX4.test(hex)) throw new OutsideSubset();
      value += String.fromCharCode(parseInt(hex, 16));
      i += 5;
    } else {
      const decoded = e === undefined ? undefined : ESCAPES[e];
      if (decoded === undefined) throw new OutsideSubset();
      value += decoded;
      i += 1;
    }
    from = i + 1;
  }
  throw new OutsideSubset(); // continues on the next line
}

/** Only spaces, then the end of the line or a comment after at least one space, may follow `from`. */
function expectLineEnd(t: string, from: number, end: number): void {
  let i = from;
  while (t.charCodeAt(i) === SPACE) i++;
  if (i === end || (i > from && t.charCodeAt(i) === HASH)) return;
  throw new OutsideSubset();
}

function isDash(t: string, at: number, end: number): boolean {
  return t.charCodeAt(at) === DASH && (at + 1 === end || t.charCodeAt(at + 1) === SPACE);
}

/** A scalar or empty flow collection starting at `at` and ending the line. */
function inlineValue(t: string, at: number, end: number): unknown {
  const c = t.charCodeAt(at);
  if (c === SQUOTE || c === DQUOTE) {
    const q = c === SQUOTE ? singleQuoted(t, at, end) : doubleQuoted(t, at, end);
    expectLineEnd(t, q.end, end);
    return q.value;
  }
  if (c === 0x7b || c === 0x5b) {
    // `{}` or `[]`: any other flow collection is outside the subset.
    if (t.charCodeAt(at + 1) !== c + 2) throw new OutsideSubset();
    expectLineEnd(t, at + 2, end);
    return c === 0x7b ? {} : [];
  }
  if (INDICATOR_START.has(c)) throw new OutsideSubset();
  // `-`, `:` and `?` start a plain scalar only when a non-space follows.
  if ((c === DASH || c === COLON || c === 0x3f) && (at + 1 === end || t.charCodeAt(at + 1) === SPACE)) {
    throw new OutsideSubset();
  }
  let stop = end; // a comment starts at ` #`
  for (let i = at + 1; i < end; i++) {
    if (t.charCodeAt(i) === HASH && t.charCodeAt(i - 1) === SPACE) {
      stop = i - 1;
      break;
    }
  }
  while (t.charCodeAt(stop - 1) === SPACE) stop--;
  const s = t.slice(at, stop);
  if (s.includes(": ") || s.charCodeAt(s.length - 1) === COLON) throw new OutsideSubset();
  return resolvePlain(s);
}

/** The key of a `key:` entry at `at` and the offset after its colon, or null if the line is no entry. */
function entryKey(t: string, at: number, end: number): { key: string; after: number } | null {
  const c = t.charCodeAt(at);
  let key: string;
  let colon: number;
  if (c === SQUOTE || c === DQUOTE) {
    const q = c === SQUOTE ? singleQuoted(t, at, end) : doubleQuoted(t, at, end);
    key = q.value;
    colon = q.end;
  } else {
    if (!isKeyHead(c)) return null;
    colon = at + 1;
    while (isKeyChar(t.charCodeAt(colon))) colon++;
    key = t.slice(at, colon);
    if (colon - at <= 5 && t.charCodeAt(colon) === COLON && NON_STRING_KEYS.has(key))
      throw new OutsideSubset();
  }
  if (t.charCodeAt(colon) !== COLON) return null;
  if (colon + 1 < end && t.charCodeAt(colon + 1) !== SPACE) return null;
  if (colon - at > MAX_KEY_LENGTH) throw new OutsideSubset();
  return { key, after: colon + 1 };
}

type Entry = NonNullable<ReturnType<typeof entryKey>>;

/** Recursive descent over the content lines of one document. */
class DocumentParser {
  /** Index of the current content line. */
  private i: number;
  /** Offsets of the current line's start and end (its `\n` or the end of the text). */
  private base = 0;
  private end = 0;
  /** Column where the current line's content starts (after a `- `, inside the line); -1 at the end. */
  private col = -1;
  /** Nodes open around the current position (block() calls under way). */
  private depth = 0;

  /** `starts` holds the offset of every line of `t`; the document is lines [first, last). */
  constructor(
    private readonly t: string,
    private readonly starts: readonly number[],
    first: number,
    private readonly last: number,
  ) {
    this.i = first - 1;
    this.advance();
  }

  /** The document, or undefined when it has no content. */
  parse(): SubsetDocument | undefined {
    if (this.col === -1) return undefined;
    const line = this.i + 1;
    const value = this.block(-1);
    if (this.col !== -1) throw new OutsideSubset(); // a line the top-level node does not take
    return { value, line };
  }

  /** Moves to the next line that is neither blank nor a comment. */
  private advance(): void {
    const t = this.t;
    for (this.i++; this.i < this.last; this.i++) {
      const base = this.starts[this.i] as number;
      const end = this.i + 1 < this.starts.length ? (this.starts[this.i + 1] as number) - 1 : t.length;
      let k = base;
      while (t.charCodeAt(k) === SPACE) k++;
      if (k < end && t.charCodeAt(k) !== HASH) {
        this.base = base;
        this.end = end;
        this.col = k - base;
        return;
      }
    }
    this.col = -1;
  }

  /** The node starting at the current position, whose parent node is indented by `parent`. */
  private block(parent: number): unknown {
    this.enter();
    const value = this.node(parent);
    this.depth--;
    return value;
  }

  /** One level deeper; leaving is `this.depth--`. */
  private enter(): void {
    if (this.depth === MAX_SUBSET_DEPTH) throw new OutsideSubset();
    this.depth++;
  }

  private node(parent: number): unknown {
    const { t, end } = this;
    const col = this.col;
    const at = this.base + col;
    if (isDash(t, at, end)) return this.sequence(col);
    const entry = entryKey(t, at, end);
    if (entry !== null) return this.mapping(col, entry);
    const value = inlineValue(t, at, end);
    this.advance();
    if (this.col > parent) throw new OutsideSubset(); // a multi-line scalar
    return value;
  }

  private sequence(indent: number): unknown[] {
    const items: unknown[] = [];
    const t = this.t;
    while (this.col === indent && isDash(t, this.base + indent, this.end)) {
      const end = this.end;
      let at = this.base + indent + 1;
      while (t.charCodeAt(at) === SPACE) at++;
      if (at === end || t.charCodeAt(at) === HASH) {
        this.advance();
        items.push(this.col > indent ? this.block(indent) : null);
      } else {
        // A compact node: `- key: value`, `- - item` or `- scalar`, indented at its first token.
        this.col = at - this.base;
        items.push(this.block(indent));
      }
    }
    if (this.col > indent) throw new OutsideSubset();
    return items;
  }

  /** The mapping at `indent`, whose first entry (on the current line) is `first`. */
  private mapping(indent: number, first: Entry): Record<string, unknown> {
    const map: Record<string, unknown> = {};
    const t = this.t;
    let entry: Entry | null = first;
    let count = 0;
    while (this.col === indent) {
      const end = this.end;
      entry ??= entryKey(t, this.base + indent, end);
      if (entry === null) throw new OutsideSubset();
      let at = entry.after;
      while (t.charCodeAt(at) === SPACE) at++;
      let value: unknown;
      if (at === end || t.charCodeAt(at) === HASH) {
        this.advance();
        if (this.col > indent) value = this.block(indent);
        else if (this.col === indent && isDash(t, this.base + indent, this.end)) {
          this.enter();
          value = this.sequence(indent);
          this.depth--;
        } else value = null;
      } else {
        value = inlineValue(t, at, end);
        this.advance();
      }
      const { key } = entry;
      // As yaml's toJS does: `__proto__`, the one inherited accessor, becomes an own property.
      if (key === "__proto__")
        Object.defineProperty(map, key, { value, writable: true, enumerable: true, configurable: true });
      else map[key] = value;
      count++;
      entry = null;
    }
    if (this.col > indent) throw new OutsideSubset();
    // A duplicate key (an error in yaml) overwrote a property: fewer properties than entries.
    if (Object.keys(map).length !== count) throw new OutsideSubset();
    return map;
  }
}

/** The documents of `text`, or null when `text` uses YAML outside the subset. */
export function parseYamlSubset(text: string): SubsetDocument[] | null {
  const docs: SubsetDocument[] = [];
  return eachYamlSubsetDocument(text, (doc) => docs.push(doc)) ? docs : null;
}

/**
 * `parseYamlSubset` one document at a time: `onDocument` gets each as soon as it is parsed, so a
 * caller that keeps only what it makes of a document lets the parsed tree die young (a file
 * parsed whole survives the young generation and fills the old one with garbage: at 24 MB of
 * manifests the daemon's heap grew to twice what it kept). Returns false when `text` uses YAML
 * outside the subset; the documents given before then are to be thrown away.
 */
export function eachYamlSubsetDocument(text: string, onDocument: (doc: SubsetDocument) => void): boolean {
  const t = text.includes("\r") ? text.replaceAll("\r\n", "\n") : text;
  if (REFUSED_CHARS.test(t) || t.includes("\r")) return false;
  const starts = [0];
  for (let nl = t.indexOf("\n"); nl !== -1; nl = t.indexOf("\n", nl + 1)) starts.push(nl + 1);
  try {
    let first = 0;
    for (let i = 0; i <= starts.length; i++) {
      if (i < starts.length) {
        const s = starts[i] as number;
        const c = t.charCodeAt(s);
        // Directives, document end markers and anything else starting `---` or `...`.
        if (c === 0x25 || t.startsWith("...", s)) return false;
        if (c !== DASH || !t.startsWith("---", s)) continue;
        const end = i + 1 < starts.length ? (starts[i + 1] as number) - 1 : t.length;
        if (end - s !== 3) return false;
      }
      const doc = new DocumentParser(t, starts, first, i).parse();
      if (doc !== undefined) onDocument(doc);
      first = i + 1;
    }
  } catch (e) {
    if (e instanceof OutsideSubset) return false;
    throw e;
  }
  return true;
}
