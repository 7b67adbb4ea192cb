/*
 * The guest's node:test reporter: one `KPT-VM test {json}` line per finished test (its path of
 * names from the top-level scenario down, pass/fail/skip, duration, the failure's message and
 * stack) and one `KPT-VM diag {json}` line per diagnostic, so that the host can rebuild the results
 * from the serial console, where kernel messages may come between lines.
 */

interface TestEventData {
  readonly name: string;
  readonly nesting: number;
  readonly skip?: string | boolean;
  readonly todo?: string | boolean;
  readonly message?: string;
  readonly details?: { readonly duration_ms?: number; readonly error?: unknown };
}

interface TestEvent {
  readonly type: string;
  readonly data: TestEventData;
}

/** The failure as text: node:test wraps the thrown error in ERR_TEST_FAILURE with it as cause. */
function describeError(error: unknown): string {
  let inner = error;
  if (
    inner instanceof Error &&
    (inner as { code?: string }).code === "ERR_TEST_FAILURE" &&
    inner.cause !== undefined
  ) {
    inner = inner.cause;
  }
  if (inner instanceof Error) return inner.stack ?? `${inner.name}: ${inner.message}`;
  return String(inner);
}

export default async function* reporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const path: string[] = [];
  for await (const event of source) {
    const data = event.data;
    switch (event.type) {
      case "test:start":
        path.length = data.nesting;
        path.push(data.name);
        yield `KPT-VM start ${JSON.stringify({ path })}\n`;
        break;
      case "test:pass":
      case "test:fail": {
        path.length = data.nesting;
        const status =
          data.skip !== undefined && data.skip !== false
            ? "skip"
            : data.todo !== undefined && data.todo !== false
              ? "todo"
              : event.type === "test:pass"
                ? "pass"
                : "fail";
        const reason =
          typeof data.skip === "string" ? data.skip : typeof data.todo === "string" ? data.todo : undefined;
        const line = {
          path: [...path, data.name],
          status,
          ms: Math.round(data.details?.duration_ms ?? 0),
          ...(reason === undefined ? {} : { reason }),
          ...(status === "fail" ? { error: describeError(data.details?.error) } : {}),
        };
        yield `KPT-VM test ${JSON.stringify(line)}\n`;
        break;
      }
      case "test:diagnostic":
        yield `KPT-VM diag ${JSON.stringify({ message: data.message ?? "" })}\n`;
        break;
      default:
        break;
    }
  }
}
